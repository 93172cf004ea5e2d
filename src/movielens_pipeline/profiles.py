"""Data-set profiles: one selector sets the data set and the settings tuned for its scale.

Each profile is a file of conf/profile/ that DVC's Hydra composition lays over conf/config.yaml (ML-100K's
settings): `dvc exp run -S profile=ml-25m-twin` composes params.yaml from them and runs (`.dvc/config` enables
it), with any other `-S` on top. `compose_params` composes the same way, for a plain `dvc repro`
(`make params SET="profile=ml-1m"`); the committed params.yaml is conf/'s composition with no override, to the byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .datasets import RELEASE_NAMES
from .errors import PipelineError
from .params import PARAMS_FILE

CONF_DIR = Path("conf")
CONFIG_NAME = "config"  # conf/config.yaml, DVC's default hydra.config_name
PROFILE_GROUP = "profile"
TWIN = "ml-25m-twin"  # the synthetic twin of ML-25M: the seed's scale
DOCS_PAGE = Path("docs/data.md")  # its table of profiles, between these markers
PROFILE_START, PROFILE_END = "<!-- profile-table:start -->", "<!-- profile-table:end -->"


def compose_params(overrides: list[str], output: Path = PARAMS_FILE, conf_dir: Path = CONF_DIR) -> None:
    """Write conf/'s composition with `overrides` (Hydra's syntax, as `dvc exp run -S` takes them) to `output`,
    byte for byte as `dvc exp run` writes it."""
    from dvc.utils.hydra import compose_and_dump  # imports Hydra: only here

    conf = str(Path(conf_dir).resolve())
    compose_and_dump(output, conf, None, CONFIG_NAME, conf, overrides)  # its Hydra plugins too, as .dvc/config


def read_profiles(conf_dir: Path = CONF_DIR) -> dict[str, tuple[str, dict]]:
    """Each profile by name: what its comment says (the data set, how its settings were chosen) and the values
    it sets."""
    found = {}
    for path in sorted((Path(conf_dir) / PROFILE_GROUP).glob("*.yaml"), key=_shown_order):
        comment = [line[2:] for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.startswith("# ")]
        found[path.stem] = (" ".join(comment), yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return found


def _shown_order(path: Path) -> tuple:
    # The default first, then the twin, then the releases as datasets.py lists them (by size).
    order = [RELEASE_NAMES[0], TWIN, *RELEASE_NAMES[1:]]
    return (order.index(path.stem) if path.stem in order else len(order), path.stem)


def flat(values: dict, prefix: str = "") -> dict[str, object]:
    """Nested params as dotted keys, as `-S` names them."""
    items = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        items.update(flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return items


def profile_table(conf_dir: Path = CONF_DIR) -> str:
    """Markdown: a row per profile, the settings it sets over conf/config.yaml's, and what it is."""
    lines = ["| profile | sets over conf/config.yaml | what it is, how its settings were chosen |", "|---|---|---|"]
    for name, (comment, values) in read_profiles(conf_dir).items():
        settings = "<br>".join(f"`{key}={_yaml(value)}`" for key, value in flat(values).items()) or "nothing"
        lines.append(f"| `{name}` | {settings} | {comment} |")
    return "\n".join(lines)


def _yaml(value: object) -> str:
    return yaml.safe_dump(value).removesuffix("\n").removesuffix("\n...")


def write_docs(page: Path = DOCS_PAGE, conf_dir: Path = CONF_DIR) -> None:
    """Rewrite the profile table in `page` from the profiles."""
    head, rest = page.read_text(encoding="utf-8").split(PROFILE_START, 1)
    _, tail = rest.split(PROFILE_END, 1)
    page.write_text(f"{head}{PROFILE_START}\n{profile_table(conf_dir)}\n{PROFILE_END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description="Compose params.yaml from conf/ as `dvc exp run -S` does.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as -S takes them: profile=ml-1m train.seed=1")
    parser.add_argument("--docs", action="store_true", help=f"rewrite the profile table in {DOCS_PAGE} instead")
    args = parser.parse_args()
    if args.docs:
        write_docs()
        print(f"updated {DOCS_PAGE}")
        return
    try:
        compose_params(args.overrides)
    except PipelineError as error:  # a stage running in this workspace (workspace_guard)
        sys.exit(f"error: {error}")
    print(f"wrote {PARAMS_FILE} from {CONF_DIR}/ with {' '.join(args.overrides) or 'no override'}")


if __name__ == "__main__":
    main()
