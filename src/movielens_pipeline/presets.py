"""Named sets of params (presets/<name>.yaml) turned into `dvc exp run -S` arguments.

A preset holds only the keys it changes, section by section; they are checked against
params.yaml's sections before anything runs. Usage:

    dvc exp run -n seed $(python -m movielens_pipeline.presets seed-ml-25m-top50)
    dvc exp run $(python -m movielens_pipeline.presets my-own-preset.yaml)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .errors import PipelineError, run_stage
from .params import PARAMS_FILE, SECTIONS, ParamsError, parse_section

PRESETS_DIR = Path("presets")


def preset_path(name_or_path: str, presets_dir: Path = PRESETS_DIR) -> Path:
    """The file of a preset given by name (presets/<name>.yaml) or by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return presets_dir / f"{name_or_path}.yaml"


def load_preset(path: Path, params_file: Path = PARAMS_FILE) -> dict[str, dict]:
    """The preset's changes by section, checked: known sections and keys, values valid once merged."""
    try:
        preset = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        available = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "none"
        raise ParamsError(f"{path}: no such preset (available in {path.parent}: {available})") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(preset, dict) or not all(isinstance(keys, dict) for keys in preset.values()):
        raise ParamsError(f"{path}: expected sections mapping keys to values, e.g. 'data: {{dataset: ml-25m}}'")
    base = yaml.safe_load(Path(params_file).read_text(encoding="utf-8")) if Path(params_file).exists() else {}
    for section, changes in preset.items():
        if section not in SECTIONS:
            raise ParamsError(f"{path}: unknown section '{section}'; valid sections are: {', '.join(SECTIONS)}")
        try:
            parse_section(section, {**(base.get(section) or {}), **changes})
        except ParamsError as error:
            raise ParamsError(f"{path}: {error}") from None
    return preset


def set_param_args(preset: dict[str, dict]) -> list[str]:
    """`-S section.key=value` arguments for `dvc exp run`, values written as YAML scalars."""
    args = []
    for section, changes in preset.items():
        for key, value in changes.items():
            text = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
            if any(c.isspace() for c in text):
                raise PipelineError(f"preset value {section}.{key}={text!r} has spaces; set it with -S by hand")
            args += ["-S", f"{section}.{key}={text}"]
    return args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="a name in presets/ (without .yaml) or the path of a preset file")
    args = parser.parse_args(argv)
    print(" ".join(set_param_args(load_preset(preset_path(args.preset)))))


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]))
