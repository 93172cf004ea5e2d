"""dvc.yaml's promise: a stage reruns when anything it depends on changes, its own code included.

A stage's source deps (those under stages/ or src/, in dvc.yaml and ensemble/dvc.yaml) must be the
shortest exact cover of the project files its command imports, transitively (computed here with `ast`;
imports inside functions count too):
- a folder (stages/, src/movielens_pipeline/ or one inside), where the stage imports every `.py` file in it,
  recursively, and only the largest such folder (none inside another listed one): it "imports the whole
  package";
- otherwise the imported file itself, one by one.
So every imported file is covered, and nothing listed holds code the stage never loads. DVC hashes a
folder dep as a directory, so .dvcignore must keep `__pycache__/` out of it (checked below). Every path a
command is given must be one of its `deps` or `outs`, so that paths are written once, in the pipeline file.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml
from harness import PROJECT

from movielens_pipeline.params import SECTIONS

PACKAGE = "movielens_pipeline"
SOURCE_ROOTS = {"stages": PROJECT / "stages", PACKAGE: PROJECT / "src" / PACKAGE}
# Where a dep is source code rather than data: a file or folder there is checked against the imports.
SOURCE_DIRS = (PROJECT / "stages", PROJECT / "src")
# Each pipeline's stages, by the name DVC gives them; the ensemble's run from the project root (`wdir: ..`).
PIPELINES = {"dvc.yaml": "", "ensemble/dvc.yaml": "ensemble/dvc.yaml:"}
STAGES = {
    prefix + name: stage
    for path, prefix in PIPELINES.items()
    for name, stage in yaml.safe_load((PROJECT / path).read_text(encoding="utf-8"))["stages"].items()
}


def module_file(name: str) -> Path | None:
    """The project file of an absolute module name (a package's `__init__.py`), or None for one from outside."""
    if name == PACKAGE or name.startswith(PACKAGE + "."):
        path = SOURCE_ROOTS[PACKAGE].joinpath(*name.split(".")[1:])
        return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    candidate = SOURCE_ROOTS["stages"] / f"{name}.py"  # a stage's sibling, e.g. `import _checkout`
    return candidate if candidate.is_file() else None


def package_of(path: Path) -> str | None:
    """The package a library file's relative imports start from: `movielens_pipeline.models` for models/base.py."""
    if SOURCE_ROOTS[PACKAGE] not in path.parents:
        return None
    parts = path.relative_to(SOURCE_ROOTS[PACKAGE]).parent.parts
    return ".".join([PACKAGE, *parts])


def imported_files(path: Path) -> set[Path]:
    """Project files `path` imports directly, anywhere in it (imports inside functions count too)."""
    package = package_of(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # `from pkg import module` imports a module; `from pkg.module import name` the module itself.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            file = module_file(name)
            if file is not None and file.is_file():
                found.add(file)
                parts = name.split(".")
                for depth in range(1, len(parts)):  # a submodule runs its packages first
                    found.add(module_file(".".join(parts[:depth])))
    return {file for file in found if file is not None and file.is_file()}


def import_closure(script: Path) -> set[Path]:
    """`script` and every project file it imports, transitively."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path) - seen)
    return seen


def python_files(folder: Path) -> set[Path]:
    """The `.py` files in `folder`, recursively."""
    return {path for path in folder.rglob("*.py") if "__pycache__" not in path.parts}


def in_source(path: Path, roots=SOURCE_DIRS) -> bool:
    return any(path == root or root in path.parents for root in roots)


def cover(imported: set[Path]) -> set[Path]:
    """The fewest deps that cover `imported` exactly: each largest folder (in stages/ or the package) all of whose
    `.py` files it holds, and the files outside those folders."""
    candidates = {folder for path in imported for folder in path.parents if in_source(folder, SOURCE_ROOTS.values())}
    whole = {folder for folder in candidates if python_files(folder) <= imported}
    folders = {folder for folder in whole if folder.parent not in whole}
    return folders | {path for path in imported if not any(folder in path.parents for folder in folders)}


def why_not(dep: Path, imported: set[Path], expected: set[Path]) -> str:
    """Why a listed source dep is not one the imports call for."""
    if not dep.exists():
        return "which does not exist"
    if dep.is_dir():
        unimported = sorted(python_files(dep) - imported)
        if unimported:
            return f"a folder holding {rel(unimported[0])}, which its command does not import"
    elif dep not in imported:
        return "which its command does not import"
    larger = next((folder for folder in dep.parents if folder in expected), None)
    if larger is None:
        return "a folder above stages/ and src/movielens_pipeline/: list those instead"
    return f"which the folder {rel(larger)} covers (its command imports all of it): list that instead"


def command_script(stage: dict) -> Path:
    words = shlex.split(stage["cmd"])
    assert words[0] == "python" and words[1].startswith("stages/"), stage["cmd"]
    return PROJECT / words[1]


def declared(stage: dict, key: str) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in stage.get(key, [])}


def rel(path: Path) -> str:
    return str(path.relative_to(PROJECT))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_cover_exactly_the_source_files_the_command_imports(name):
    stage = STAGES[name]
    imported = import_closure(command_script(stage))
    expected = cover(imported)
    listed = {PROJECT / dep for dep in declared(stage, "deps") if dep.endswith(".py") or in_source(PROJECT / dep)}
    problems = [
        f"stage {name}: deps lack the folder {rel(dep)}, all of whose .py files its command imports"
        if dep.is_dir()
        else f"stage {name}: deps lack {rel(dep)}, which its command imports"
        for dep in sorted(expected - listed)
    ]
    problems += [
        f"stage {name}: deps list {rel(dep)}, {why_not(dep, imported, expected)}" for dep in sorted(listed - expected)
    ]
    assert not problems, "\n".join(problems)


def test_the_cover_is_the_largest_wholly_imported_folders_and_the_files_outside_them():
    package = SOURCE_ROOTS[PACKAGE]
    models = python_files(package / "models")
    assert cover(models) == {package / "models"}  # not models/gradient/ and models/sweep/ besides
    assert cover(models | {package / "errors.py"}) == {package / "models", package / "errors.py"}
    one_short = models - {package / "models" / "sweep" / "ridge.py"}
    assert package / "models" not in cover(one_short)
    assert package / "models" / "gradient" in cover(one_short)
    assert package / "models" / "sweep" / "als.py" in cover(one_short)


def test_a_folder_dep_is_hashed_without_python_bytecode():
    listed = {dep for stage in STAGES.values() for dep in declared(stage, "deps") if (PROJECT / dep).is_dir()}
    if any(in_source(PROJECT / dep) for dep in listed):
        patterns = (PROJECT / ".dvcignore").read_text(encoding="utf-8").splitlines()
        assert "__pycache__/" in patterns, ".dvcignore must ignore __pycache__/: bytecode would change the hash"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_path_a_command_is_given_is_a_dep_or_an_out(name):
    stage = STAGES[name]
    items = {f"${{item.{key}}}" for key in stage.get("matrix", {})}  # a matrix item's name, not a path
    names = items | set(SECTIONS)  # nor a params.yaml section's (`--section rank`)
    paths = [word for word in shlex.split(stage["cmd"])[2:] if not word.startswith("-") and word not in names]
    known = declared(stage, "deps") | declared(stage, "outs")
    for path in paths:
        assert path in known, f"stage {name}: its command is given {path}, which is neither a dep nor an out"


def test_the_closure_follows_relative_imports_and_finds_the_checkout_shim():
    closure = {str(path.relative_to(PROJECT)) for path in import_closure(PROJECT / "stages" / "split.py")}
    assert {"stages/_checkout.py", "src/movielens_pipeline/split.py", "src/movielens_pipeline/errors.py"} <= closure
    assert "src/movielens_pipeline/atomic.py" in closure  # via `from movielens_pipeline.atomic import ...`
    assert not any(name.startswith("src/movielens_pipeline/models/") for name in closure)
    # Imports inside a function count: the orchestrator imports each training path lazily.
    training = {str(path.relative_to(PROJECT)) for path in import_closure(PROJECT / "stages" / "train.py")}
    assert {"src/movielens_pipeline/training/gradient.py", "src/movielens_pipeline/training/sweeps.py"} <= training


def test_no_stage_reads_a_data_path_written_into_its_script():
    for script in sorted((PROJECT / "stages").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        for literal in ("data/", "models/", "dvclive/", "eval/"):
            assert f'"{literal}' not in text and f"'{literal}" not in text, f"{script.name} names {literal}..."


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_params_value_reaches_a_command_or_a_path(name):
    # DVC runs `cmd` through a shell and deletes `outs` before a run: an interpolated params value
    # there is a shell injection and a way to delete any folder. Stages read their values themselves.
    # The one value allowed is a matrix item, whose values are plain names written in the pipeline file itself.
    stage = STAGES[name]
    matrix = stage.get("matrix", {})
    for key, values in matrix.items():
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", str(value)) for value in values), f"stage {name}: matrix {key}"
    allowed = {f"item.{key}" for key in matrix}
    for key in ("cmd", "deps", "outs"):
        text = yaml.safe_dump(stage.get(key, ""))
        interpolated = set(re.findall(r"\$\{([^}]*)\}", text))
        assert interpolated <= allowed, f"stage {name}: its {key} interpolates a value: {text.strip()}"


def test_an_ensemble_member_reruns_on_its_own_model_settings_and_the_shared_train_keys_only():
    # Imported here, not at the top: the checks above read the source with `ast` and run without the library.
    from movielens_pipeline.models import REGISTRY
    from movielens_pipeline.params import TrainParams

    stage = STAGES["ensemble/dvc.yaml:member"]
    shared = {f"train.{key}" for key in TrainParams.model_fields if key not in ("model", "refit")}
    assert set(stage["params"]) == shared | {"train.${item.model}", "ensemble.refit"}
    trained = stage["matrix"]["model"]
    assert set(trained) <= set(REGISTRY)
    listed = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))["ensemble"]["members"]
    assert set(listed) <= set(trained), "ensemble.members lists a model the member stage does not train"
