"""params.py: every params.yaml section parses into a typed dataclass or fails with a precise message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from harness import merged, project_params, section_of

from movielens_pipeline.models import REGISTRY, load_train_params, model_settings
from movielens_pipeline.params import (
    SECTIONS,
    GradientSettings,
    ParamsError,
    PreprocessParams,
    load_section,
    parse_section,
)

PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
COMMITTED = yaml.safe_load(PROJECT_PARAMS.read_text(encoding="utf-8"))
MD5 = "0e33842e24a9c977be4e0107933c0723"


# Every key of params.yaml, as a path: ("train", "autorec", "hidden_dim").
KEYS = [
    (section, key, *([sub] if sub else []))
    for section, values in COMMITTED.items()
    for key, value in values.items()
    for sub in (list(value) if isinstance(value, dict) else [None])
]


def changed(section: str, **changes: object):
    """Parse `section` as the project's params.yaml has it, with `changes` (merged into sub-sections)."""
    return project_params(section, **changes)


def model_changed(name: str, **changes: object):
    """The settings of model `name` as params.yaml has them (in train or rank), with `changes`."""
    return changed(section_of(name), model=name, **{name: changes}).settings


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_the_schemas_hold_no_defaults(section):
    # params.yaml is the one source of values: a default here could silently disagree with it.
    assert all(field.is_required() for field in SECTIONS[section].model_fields.values())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_models_settings_hold_no_defaults(name):
    assert all(field.is_required() for field in REGISTRY[name].Settings.model_fields.values())


@pytest.mark.parametrize("path", KEYS, ids=".".join)
def test_deleting_any_key_from_params_yaml_stops_with_one_line_naming_it(path):
    values = {section: dict(keys) for section, keys in COMMITTED.items()}
    owner = values[path[0]]
    for part in path[1:-1]:
        owner[part] = dict(owner[part])
        owner = owner[part]
    del owner[path[-1]]
    with pytest.raises(ParamsError) as raised:
        changed_whole(path[0], values[path[0]])
    name = ".".join(path)
    assert str(raised.value) == f"{name}: missing; every key must be set in params.yaml (see docs/params.md)"


def changed_whole(section: str, values: dict):
    return parse_section(section, values, model_settings())  # train: every model's settings typed


def test_empty_or_null_section_names_its_first_key():
    with pytest.raises(ParamsError, match=r"^split\.strategy: missing"):
        parse_section("split", {})
    with pytest.raises(ParamsError, match=r"^split: expected a mapping of keys, got None"):
        parse_section("split", None)


def test_values_are_taken_from_the_mapping():
    parsed = changed("train", model="global_mean", accelerator="auto", biased_mf={"embedding_dim": 8})
    assert (parsed.model, parsed.biased_mf.embedding_dim, parsed.accelerator) == ("global_mean", 8, "auto")
    assert parsed.settings == parsed.global_mean
    assert parsed.settings.learning_rate == COMMITTED["train"]["global_mean"]["learning_rate"]


def test_misspelled_key_names_it_and_lists_the_valid_keys():
    with pytest.raises(ParamsError) as raised:
        changed("train", biased_mf={"embeding_dim": 16})
    assert str(raised.value) == (
        "train.biased_mf.embeding_dim: unknown key; valid keys are: "
        "batch_size, embedding_dim, learning_rate, weight_decay"
    )
    with pytest.raises(ParamsError) as raised:
        changed("train", patiense=3)
    for key in SECTIONS["train"].model_fields:
        assert key in str(raised.value)


def test_a_setting_of_another_model_is_refused_naming_the_key():
    with pytest.raises(ParamsError, match=r"^train\.biased_mf\.dropout: unknown key; valid keys are: batch_size, "):
        changed("train", biased_mf={"dropout": 0.2})
    with pytest.raises(ParamsError, match=r"^train\.autorec\.embedding_dim: unknown key"):
        changed("train", model="autorec", autorec={"embedding_dim": 8})


def test_a_model_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ParamsError, match=r"^train\.autorec: got 3; expected a mapping of keys"):
        changed("train", autorec=3)


def test_section_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ParamsError, match=r"^split: expected a mapping of keys, got \[0\.7, 0\.15\]"):
        parse_section("split", [0.7, 0.15])


@pytest.mark.parametrize(
    ("section", "key", "value", "shown"),
    [
        ("train.biased_mf", "embedding_dim", "32", "'32' (str)"),
        ("train.biased_mf", "embedding_dim", True, "True (bool)"),
        ("train.biased_mf", "embedding_dim", 32.0, "32.0 (float)"),
        ("train", "max_epochs", None, "None (NoneType)"),
        ("train.svdpp", "learning_rate", "0.01", "'0.01' (str)"),
        ("train.svdpp", "learning_rate", False, "False (bool)"),
        ("preprocess", "sample_size", "1000", "'1000' (str)"),
        ("preprocess", "top_n_movies", 50.5, "50.5 (float)"),
        ("data", "url", 42, "42 (int)"),
        ("data", "timeout_seconds", [30], "[30] (list)"),
        ("split", "seed", 1.5, "1.5 (float)"),
    ],
)
def test_wrong_type_names_the_key_and_the_value(section, key, value, shown):
    with pytest.raises(ParamsError) as raised:
        changed_nested(section, key, value)
    message = str(raised.value)
    assert message.startswith(f"{section}.{key}: got {shown}; expected ")


def test_wrong_type_message_says_what_is_allowed():
    with pytest.raises(ParamsError, match=r"expected null or an integer >= 1$"):
        changed("preprocess", **{"sample_size": "all"})
    with pytest.raises(ParamsError, match=r"train\.accelerator: got 'tpu' .*one of 'cpu', 'gpu', 'auto'"):
        changed("train", **{"accelerator": "tpu"})


def nested(section: str, key: str, value: object) -> tuple[str, dict]:
    """`changed`'s arguments for `section.key: value`, where `section` may name a sub-section: train.autorec."""
    top, *subs = section.split(".")
    change: dict = {key: value}
    for sub in reversed(subs):
        change = {sub: change}
    return top, change


def changed_nested(section: str, key: str, value: object):
    top, change = nested(section, key, value)
    return changed(top, **change)


def test_ints_widen_to_floats():
    settings = model_changed("biased_mf", learning_rate=1, weight_decay=0)
    assert settings.learning_rate == 1.0 and type(settings.learning_rate) is float
    assert type(settings.weight_decay) is float
    data = changed("data", **{"timeout_seconds": 5})
    assert data.timeout_seconds == 5.0 and type(data.timeout_seconds) is float


def test_floats_do_not_narrow_to_ints_and_nullable_ints_accept_null():
    assert changed("preprocess", **{"sample_size": None, "top_n_movies": 50}).top_n_movies == 50
    with pytest.raises(ParamsError, match=r"preprocess\.sample_size: got 100\.0"):
        changed("preprocess", **{"sample_size": 100.0})


@pytest.mark.parametrize("key", ["train_fraction", "val_fraction"])
@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, 0.0])
def test_fractions_outside_the_open_unit_interval_are_rejected(key, value):
    with pytest.raises(ParamsError) as raised:
        changed("split", **{"train_fraction": 0.5, "val_fraction": 0.2, key: value})
    expected = f"split.{key}: got {value!r}; expected a number strictly between 0 and 1"
    assert str(raised.value).startswith(expected)


@pytest.mark.parametrize(("train", "val"), [(0.8, 0.2), (0.85, 0.15), (0.9, 0.3)])
def test_train_plus_val_of_one_or_more_is_rejected(train, val):
    with pytest.raises(ParamsError, match=r"split\.train_fraction \+ val_fraction: .*test part is not empty"):
        changed("split", **{"train_fraction": train, "val_fraction": val})


def test_fractions_just_below_one_are_accepted():
    parsed = changed("split", train_fraction=0.8, val_fraction=0.19)
    assert (parsed.train_fraction, parsed.val_fraction) == (0.8, 0.19)


def test_unknown_model_lists_the_models():
    with pytest.raises(ParamsError) as raised:
        changed("train", **{"model": "mf"})
    expected = ", ".join(repr(name) for name in REGISTRY if section_of(name) == "train")
    assert str(raised.value) == f"train.model: got 'mf' (str); expected one of {expected}"
    assert "'svdpp'" in str(raised.value)


def test_a_ranking_model_is_refused_as_the_rating_model_and_the_other_way_round():
    with pytest.raises(ParamsError, match=r"^train\.model: got 'ials' \(str\); expected one of 'global_mean', "):
        changed("train", model="ials")
    with pytest.raises(
        ParamsError, match=r"^rank\.model: got 'biased_mf' \(str\); expected one of 'bpr', 'ease', 'ials'$"
    ):
        changed("rank", model="biased_mf")


def test_without_the_models_a_model_is_any_name_with_a_sub_section():
    # What the stages that do not train check (they do not import the models, so torch).
    with pytest.raises(ParamsError, match=r"^train\.model: got 'mf'; expected one of 'global_mean', 'biases', "):
        changed_whole_lax("train", merged(COMMITTED["train"], {"model": "mf"}))
    with pytest.raises(ParamsError, match=r"^train\.patiense: unknown key; valid keys are: .*, and one sub-section"):
        changed_whole_lax("train", merged(COMMITTED["train"], {"patiense": 3}))


def changed_whole_lax(section: str, values: dict):
    return parse_section(section, values)


def test_unknown_dataset_lists_the_datasets():
    with pytest.raises(ParamsError) as raised:
        changed("data", **{"dataset": "ml-26m"})
    assert str(raised.value) == (
        "data.dataset: got 'ml-26m' (str); expected one of 'ml-100k', 'ml-1m', 'ml-10m', 'ml-20m', 'ml-25m', "
        "'ml-32m', 'ml-latest-small', 'ml-latest', 'synthetic'"
    )


def test_min_epochs_above_max_epochs_is_rejected():
    with pytest.raises(ParamsError, match=r"train\.min_epochs: got 5; expected an integer from 1 to max_epochs \(3\)"):
        changed("train", **{"min_epochs": 5, "max_epochs": 3})
    assert changed("train", **{"min_epochs": 3, "max_epochs": 3}).min_epochs == 3


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train.biased_mf", "embedding_dim", 0),
        ("train.biased_mf", "learning_rate", 0),
        ("train.autorec", "weight_decay", -0.1),
        ("rank.bpr", "batch_size", 0),
        ("rank.ials", "unobserved_weight", -1),
        ("train.timesvd", "time_bins", 0),
        ("train.genre_mlp", "dropout", 1.0),
        ("train", "patience", 0),
        ("preprocess", "sample_size", 0),
        ("preprocess", "min_ratings_per_user", 0),
        ("evaluate", "ranking_k", 0),
        ("evaluate", "ranking_relevant_rating", 5.5),
        ("data", "timeout_seconds", 0),
    ],
)
def test_out_of_range_values_name_key_and_value(section, key, value):
    with pytest.raises(ParamsError) as raised:
        changed_nested(section, key, value)
    assert str(raised.value).startswith(f"{section}.{key}: got {value!r}")


@pytest.mark.parametrize("section", ["preprocess", "split", "train"])
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_the_unsigned_32_bit_range_is_rejected(section, seed):
    # numpy's default_rng refuses negative seeds and Lightning refuses anything outside uint32.
    with pytest.raises(ParamsError, match=rf"^{section}\.seed: got {seed}; expected an integer from 0 to 4294967295"):
        changed(section, **{"seed": seed})


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seed_at_the_ends_of_the_range_is_accepted(seed):
    assert changed("split", **{"seed": seed}).seed == seed


@pytest.mark.parametrize("md5", ["abc", "0" * 31, "0" * 33, "g" * 32, MD5[:-1] + " "])
def test_md5_must_be_32_hex_digits(md5):
    with pytest.raises(ParamsError) as raised:
        changed("data", **{"url": "ml-100k.zip", "md5": md5})
    assert str(raised.value) == f"data.md5: got {md5!r}; expected null or 32 hexadecimal digits"


def test_md5_requires_url():
    with pytest.raises(ParamsError, match=r"data\.md5 is set but data\.url is not"):
        changed("data", **{"md5": MD5})


def test_md5_with_url_is_accepted_in_either_case():
    parsed = changed("data", url="mirror/ml-100k.zip", md5=MD5)
    assert (parsed.url, parsed.md5) == ("mirror/ml-100k.zip", MD5)
    assert changed("data", **{"url": "mirror/ml-100k.zip", "md5": MD5.upper()}).md5 == MD5.upper()


def write_params(folder: Path, document: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def with_changes(**sections: dict) -> dict:
    """The committed params.yaml with some keys of some sections changed."""
    return {name: {**values, **sections.get(name, {})} for name, values in COMMITTED.items()}


def test_load_section_reads_one_section_of_a_file(tmp_path):
    path = write_params(tmp_path, with_changes(preprocess={"top_n_movies": 50, "seed": 3}, split={"seed": 9}))
    assert load_section("preprocess", path) == changed("preprocess", top_n_movies=50, seed=3)
    assert isinstance(load_section("preprocess", path), PreprocessParams)
    assert load_section("split", path) == changed("split", seed=9)


def test_load_section_yaml_exponent_without_dot_is_a_string_and_is_rejected(tmp_path):
    # YAML 1.1 reads 1e-3 as a string; the message must show it, not fail later in training.
    path = tmp_path / "params.yaml"
    document = with_changes(train={"biased_mf": {**COMMITTED["train"]["biased_mf"], "learning_rate": "LR"}})
    path.write_text(yaml.safe_dump(document).replace("LR", "1e-3"), encoding="utf-8")
    with pytest.raises(ParamsError, match=r"train\.biased_mf\.learning_rate: got '1e-3' \(str\); expected a num"):
        load_train_params(path)


def test_load_section_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ParamsError) as raised:
        load_section("train", path)
    assert str(path) in str(raised.value)
    assert "file not found" in str(raised.value)


def test_load_section_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  model: [biased_mf\n", encoding="utf-8")
    with pytest.raises(ParamsError) as raised:
        load_section("train", path)
    assert str(raised.value).startswith(f"{path}: not valid YAML")


def test_load_section_missing_section_names_the_file_and_section(tmp_path):
    document = with_changes()
    del document["split"]
    path = write_params(tmp_path, document)
    with pytest.raises(ParamsError) as raised:
        load_section("train", path)
    assert str(raised.value) == f"{path}: section 'split' is missing"


@pytest.mark.parametrize("text", ["", "- train\n- split\n", "just a string\n"])
def test_load_section_document_that_is_not_a_mapping_names_the_file(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError) as raised:
        load_section("train", path)
    assert str(raised.value).startswith(f"{path}: expected a mapping of sections")


def test_every_model_has_its_section_in_params_yaml_and_every_section_a_model():
    for section in ("train", "rank"):
        sections = {key for key, value in COMMITTED[section].items() if isinstance(value, dict)}
        assert sections == {name for name in REGISTRY if section_of(name) == section}


@pytest.mark.parametrize(("key", "value"), [("learning_rate", float("inf")), ("weight_decay", float("nan"))])
def test_floats_must_be_finite(key, value):
    with pytest.raises(ParamsError, match=rf"^train\.biased_mf\.{key}: got {value}; expected a finite number$"):
        model_changed("biased_mf", **{key: value})


def test_sizes_are_bounded():
    with pytest.raises(ParamsError, match=r"^train\.biased_mf\.embedding_dim: got 10+; expected an integer from 1 to"):
        model_changed("biased_mf", embedding_dim=10**30)


def test_project_params_yaml_has_exactly_the_known_sections():
    document = yaml.safe_load(PROJECT_PARAMS.read_text(encoding="utf-8"))
    assert set(document) == set(SECTIONS)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_section_of_the_project_params_yaml_parses(section):
    parsed = load_section(section, path=PROJECT_PARAMS)
    assert isinstance(parsed, SECTIONS[section])


def test_load_section_on_a_folder_or_non_utf8_file_names_the_file(tmp_path):
    with pytest.raises(ParamsError, match="cannot be read"):
        load_section("train", tmp_path)
    binary = tmp_path / "params.yaml"
    binary.write_bytes(b"train:\n  model: \xff\xfe\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: cannot be read"):
        load_section("train", binary)


def test_load_section_checks_every_other_section_too(tmp_path):
    # A typo in any section fails the first stage that runs, whichever section that stage reads.
    path = write_params(tmp_path, with_changes(train={"patiense": 3}))
    with pytest.raises(ParamsError, match=r"train\.patiense: unknown key; valid keys are: .*patience"):
        load_section("split", path)
    # A model's settings are checked by the stage that imports the models, train, before any work.
    path = write_params(tmp_path, with_changes(train={"autorec": {**COMMITTED["train"]["autorec"], "dim": 8}}))
    assert load_section("split", path).seed == COMMITTED["split"]["seed"]
    with pytest.raises(ParamsError, match=r"^train\.autorec\.dim: unknown key; valid keys are: batch_size, hidden"):
        load_train_params(path)


def test_load_section_rejects_an_unknown_top_level_section(tmp_path):
    path = write_params(tmp_path, {**with_changes(), "trian": {"embedding_dim": 8}})
    with pytest.raises(ParamsError) as raised:
        load_section("split", path)
    assert str(raised.value) == (
        f"{path}: unknown section 'trian'; valid sections are: data, preprocess, split, train, rank, evaluate, ensemble"
    )


@pytest.mark.parametrize(
    ("n_train", "batch_size", "learning_rate"),
    [
        (70_000, 512, 0.003),  # ML-100K's training part: the values tuned there
        (10, 512, 0.003),
        (1_000_000, 8_192, 0.003 * (0.01 / 0.003) ** (4 / 7)),
        (17_500_000, 65_536, 0.01),  # ML-25M's: the CPU's fastest batch, the learning rate measured there
        (200_000_000, 65_536, 0.01),
    ],
)
def test_auto_batch_size_and_learning_rate_follow_the_number_of_training_ratings(n_train, batch_size, learning_rate):
    resolved = model_changed("biased_mf", batch_size="auto", learning_rate="auto").resolved(n_train)
    assert resolved.batch_size == batch_size
    assert resolved.learning_rate == pytest.approx(learning_rate)


def test_values_set_by_hand_are_kept_and_auto_learning_rate_follows_a_hand_set_batch():
    assert model_changed("biased_mf", batch_size=512, learning_rate=0.02).resolved(10**7).batch_size == 512
    assert model_changed("svdpp", batch_size=65_536, learning_rate="auto").resolved(70_000).learning_rate == 0.01
    assert model_changed("bpr", batch_size="auto", learning_rate=0.05).resolved(10**8).learning_rate == 0.05


def test_auto_gives_the_gradient_models_the_values_tuned_on_ml_100k():
    settings = project_params("train", model="biased_mf").settings
    assert isinstance(settings, GradientSettings)
    resolved = settings.resolved(70_000)
    assert (resolved.batch_size, resolved.learning_rate) == (512, 0.003)


def test_more_than_one_process_needs_the_ddp_strategy():
    with pytest.raises(ParamsError, match=r"^train\.strategy: got 'auto'; expected ddp, to train on 4 processes"):
        changed("train", devices=2, num_nodes=2)
    assert changed("train", devices=2, strategy="ddp").world_size == 2
