"""Configuration: the paper's defaults, round trips, validation errors, overrides and path rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcr.config import (
    PROJECTOR_PRESETS,
    ConnectConfig,
    MethodConfig,
    ProjectorConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_connect_config,
    parse_override,
    save_config,
)
from cmcr.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted(
    p for pattern in ("*.yaml", "*.yml", "*.json") for p in (REPO_ROOT / "configs").rglob(pattern)
)


def _raw_config(queries_a: str = "/data/clip_text", queries_b: str = "/data/clap_text") -> dict:
    return {
        "shared_modality": "text",
        "spaces": {
            "clip": {"queries": queries_a, "memory": "/data/clip_image", "memory_modality": "image"},
            "clap": {"queries": queries_b, "memory": "/data/clap_audio", "memory_modality": "audio"},
        },
    }


def _write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# -- defaults --------------------------------------------------------------------------------------
def test_method_defaults_are_the_papers_values():
    method = MethodConfig()
    assert method.noise_var == pytest.approx(0.004)
    assert method.memory_temperature == pytest.approx(0.01)
    assert method.temperature == pytest.approx(0.01)
    assert method.intra_weight == pytest.approx(0.1)
    assert method.memory_top_k is None  # full softmax over the memory, as in the paper
    assert method.use_noise and method.use_memory and method.use_pseudo_inter and method.use_intra


def test_train_defaults_are_the_papers_values():
    train = TrainConfig()
    assert (train.epochs, train.batch_size, train.lr) == (36, 4096, pytest.approx(1e-3))


def test_projector_defaults_match_the_clap_clip_heads():
    projector = ProjectorConfig()
    assert (projector.hidden, projector.out_dim, projector.layers) == (1024, 512, 2)
    assert projector.batch_norm and projector.final_norm and not projector.final_activation


def test_connect_config_fills_defaults_for_omitted_sections():
    config = ConnectConfig.from_dict(_raw_config())
    assert config.train == TrainConfig()
    assert config.method == MethodConfig()
    assert config.projector == ProjectorConfig()
    assert config.space_names == ["clip", "clap"]


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_then_load_round_trips(tmp_path, suffix):
    raw = _raw_config()
    raw["train"] = {"epochs": 3, "lr": 0.5, "seed": 7}
    raw["method"] = {"memory_top_k": 32, "use_intra": False, "intra_squared": False}
    raw["projector"] = {"preset": "ulip-clip", "dropout": 0.25}
    config = ConnectConfig.from_dict(raw)
    path = tmp_path / f"connect{suffix}"
    save_config(config, path)
    assert load_connect_config(path).to_dict() == config.to_dict()


def test_json_file_is_written_as_json(tmp_path):
    path = tmp_path / "connect.json"
    save_config(ConnectConfig.from_dict(_raw_config()), path)
    assert json.loads(path.read_text())["spaces"]["clap"]["memory_modality"] == "audio"


@settings(max_examples=25, deadline=None)
@given(epochs=st.integers(1, 10_000), lr=st.floats(1e-8, 10.0), top_k=st.none() | st.integers(1, 10**6),
       weight=st.floats(0.0, 100.0), squared=st.booleans())
def test_yaml_round_trip_preserves_any_valid_values(tmp_path_factory, epochs, lr, top_k, weight, squared):
    raw = _raw_config()
    raw["train"] = {"epochs": epochs, "lr": lr}
    raw["method"] = {"memory_top_k": top_k, "intra_weight": weight, "intra_squared": squared}
    config = ConnectConfig.from_dict(raw)
    path = tmp_path_factory.mktemp("rt") / "connect.yaml"
    save_config(config, path)
    assert load_connect_config(path).to_dict() == config.to_dict()


# -- projector presets -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PROJECTOR_PRESETS))
def test_preset_sets_its_values(name):
    projector = from_dict(ProjectorConfig, {"preset": name})
    for key, value in PROJECTOR_PRESETS[name].items():
        assert getattr(projector, key) == value


def test_ulip_clip_preset_is_one_block_with_final_relu():
    projector = from_dict(ProjectorConfig, {"preset": "ulip-clip"})
    assert (projector.layers, projector.hidden, projector.final_activation) == (1, 512, True)


def test_explicit_keys_override_the_preset():
    projector = from_dict(ProjectorConfig, {"preset": "clap-clip", "hidden": 64, "out_dim": 32})
    assert (projector.hidden, projector.out_dim) == (64, 32)
    assert projector.layers == PROJECTOR_PRESETS["clap-clip"]["layers"]


def test_unknown_preset_error_lists_valid_presets():
    with pytest.raises(ConfigError) as err:
        from_dict(ProjectorConfig, {"preset": "clip-imagebind"})
    for name in PROJECTOR_PRESETS:
        assert name in str(err.value)


# -- unknown keys and wrong types ------------------------------------------------------------------
def test_unknown_top_level_key_error_lists_valid_keys():
    raw = {**_raw_config(), "trian": {}}
    with pytest.raises(ConfigError) as err:
        ConnectConfig.from_dict(raw)
    message = str(err.value)
    assert "trian" in message
    for key in ("spaces", "shared_modality", "train", "method", "projector"):
        assert key in message


def test_unknown_nested_key_error_names_the_dotted_key_and_lists_the_sections_keys():
    raw = {**_raw_config(), "train": {"epoch": 3}}
    with pytest.raises(ConfigError) as err:
        ConnectConfig.from_dict(raw)
    message = str(err.value)
    assert "train.epoch" in message
    for key in ("epochs", "batch_size", "lr", "seed"):
        assert key in message


def test_unknown_key_inside_a_space_names_the_space():
    raw = _raw_config()
    raw["spaces"]["clip"]["querys"] = "x"
    with pytest.raises(ConfigError, match=r"spaces\.clip\.querys") as err:
        ConnectConfig.from_dict(raw)
    assert "queries" in str(err.value)


def test_missing_required_key_is_named():
    raw = _raw_config()
    del raw["spaces"]["clap"]["queries"]
    with pytest.raises(ConfigError, match=r"spaces\.clap\.queries"):
        ConnectConfig.from_dict(raw)


@pytest.mark.parametrize("section, key, value, phrase", [
    ("train", "epochs", "ten", "integer"),
    ("train", "epochs", 2.5, "integer"),
    ("train", "epochs", True, "integer"),
    ("train", "lr", "fast", "number"),
    ("train", "drop_last", "yes", "true or false"),
    ("method", "use_intra", 1, "true or false"),
    ("method", "memory_top_k", "all", "integer"),
    ("projector", "hidden", [1024], "integer"),
])
def test_wrong_type_error_names_key_and_expected_type(section, key, value, phrase):
    raw = {**_raw_config(), section: {key: value}}
    with pytest.raises(ConfigError) as err:
        ConnectConfig.from_dict(raw)
    assert f"{section}.{key}" in str(err.value)
    assert phrase in str(err.value)


def test_integer_is_accepted_where_a_number_is_expected():
    config = ConnectConfig.from_dict({**_raw_config(), "train": {"lr": 1}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_section_that_is_not_a_mapping_is_an_error():
    with pytest.raises(ConfigError, match="train"):
        ConnectConfig.from_dict({**_raw_config(), "train": 5})


def test_load_error_names_the_config_file(tmp_path):
    path = _write_yaml(tmp_path / "bad.yaml", {**_raw_config(), "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_connect_config(path)


def test_unparsable_file_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("spaces: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_connect_config(path)


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_connect_config(tmp_path / "absent.yaml")


def test_top_level_list_is_an_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_connect_config(path)


# -- exactly two spaces ----------------------------------------------------------------------------
@pytest.mark.parametrize("count", [0, 1, 3])
def test_connect_config_requires_exactly_two_spaces(count):
    spaces = {f"space{i}": {"queries": f"/q{i}"} for i in range(count)}
    with pytest.raises(ConfigError, match="exactly two"):
        ConnectConfig.from_dict({"spaces": spaces})


# -- overrides -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, keys, value", [
    ("train.epochs=10", ["train", "epochs"], 10),
    ("train.lr=0.5", ["train", "lr"], 0.5),
    ("method.use_noise=false", ["method", "use_noise"], False),
    ("method.memory_top_k=null", ["method", "memory_top_k"], None),
    ("method.memory_top_k=", ["method", "memory_top_k"], None),
    ("shared_modality=image", ["shared_modality"], "image"),
    ("spaces.clip.queries=a=b.npy", ["spaces", "clip", "queries"], "a=b.npy"),
    ("projector={preset: ulip-clip}", ["projector"], {"preset": "ulip-clip"}),
    (" train.seed = 3", ["train", "seed"], 3),
])
def test_parse_override_reads_dotted_key_and_yaml_value(text, keys, value):
    assert parse_override(text) == (keys, value)


def test_override_accepts_exponent_notation_for_floats():
    # A user writing --set train.lr=1e-4 means a number (YAML 1.1 alone reads '1e-4' as a string).
    raw = apply_overrides(_raw_config(), ["train.lr=1e-4"])
    assert ConnectConfig.from_dict(raw).train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train.epochs=[1,"])
def test_malformed_override_is_a_config_error_naming_it(text):
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, [text])
    assert text in str(err.value)


def test_apply_overrides_sets_nested_keys_and_creates_sections():
    raw = apply_overrides(_raw_config(), ["train.epochs=2", "method.use_intra=false",
                                          "spaces.clap.memory=/elsewhere"])
    config = ConnectConfig.from_dict(raw)
    assert config.train.epochs == 2
    assert config.method.use_intra is False
    assert config.spaces["clap"].memory == "/elsewhere"
    assert config.train.batch_size == TrainConfig().batch_size  # siblings keep their defaults


def test_later_override_wins():
    raw = apply_overrides(_raw_config(), ["train.seed=1", "train.seed=2"])
    assert raw["train"]["seed"] == 2


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.value=4"])


def test_override_with_unknown_key_is_caught_by_validation(tmp_path):
    path = _write_yaml(tmp_path / "connect.yaml", _raw_config())
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        load_connect_config(path, ["train.epoch=3"])


def test_load_applies_overrides_before_validation(tmp_path):
    path = _write_yaml(tmp_path / "connect.yaml", {**_raw_config(), "train": {"epochs": 5}})
    config = load_connect_config(path, ["train.epochs=9", "projector.preset=ulip-clip"])
    assert config.train.epochs == 9
    assert config.projector.layers == 1


# -- store paths -----------------------------------------------------------------------------------
def test_relative_store_paths_resolve_against_the_config_files_directory(tmp_path, monkeypatch):
    config_dir = tmp_path / "project" / "configs"
    raw = _raw_config(queries_a="emb/clip_text", queries_b="../emb/clap_text")
    raw["spaces"]["clip"]["memory"] = "emb/clip_image.npy"
    path = _write_yaml(config_dir / "connect.yaml", raw)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_connect_config(Path("..") / "project" / "configs" / "connect.yaml")
    assert config.spaces["clip"].queries == str((config_dir / "emb/clip_text").resolve())
    assert config.spaces["clip"].memory == str((config_dir / "emb/clip_image.npy").resolve())
    assert config.spaces["clap"].queries == str((tmp_path / "project/emb/clap_text").resolve())
    assert path.exists()


def test_absolute_store_paths_are_kept(tmp_path):
    path = _write_yaml(tmp_path / "connect.yaml", _raw_config())
    config = load_connect_config(path)
    assert config.spaces["clip"].queries == "/data/clip_text"
    assert config.spaces["clap"].memory == "/data/clap_audio"


def test_missing_memory_stays_none(tmp_path):
    raw = _raw_config()
    del raw["spaces"]["clip"]["memory"]
    config = load_connect_config(_write_yaml(tmp_path / "connect.yaml", raw))
    assert config.spaces["clip"].memory is None


# -- shipped configs -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO_ROOT)) for p in SHIPPED_CONFIGS])
def test_shipped_config_loads_and_validates(path):
    config = load_connect_config(path)
    assert len(config.spaces) == 2
    # validation is idempotent: the loaded config rebuilds from its own dict
    assert ConnectConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
