"""Recipe options (masked / soft InfoNCE targets, dim-scaled noise) and the recipe registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from cmcr import recipes
from cmcr.config import (RECIPE_METHOD_KEYS, ConnectConfig, MethodConfig, load_connect_config,
                         save_config)
from cmcr.errors import ConfigError
from cmcr.method.objective import (add_noise, batch_targets, cmcr_loss, info_nce, noise_variance,
                         soft_cross_entropy, text_agreement)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator), dim=1)


def _raw(**extra) -> dict:
    return {"spaces": {"clip": {"queries": "a", "memory": "b", "memory_modality": "image"},
                       "clap": {"queries": "c", "memory": "d", "memory_modality": "audio"}},
            **extra}


# -- masked and soft InfoNCE -----------------------------------------------------------------------
def test_masked_info_nce_equals_plain_when_nothing_is_masked():
    left, right = _unit(6, 5, 0), _unit(6, 5, 1)
    nothing = torch.zeros(6, 6, dtype=torch.bool)
    torch.testing.assert_close(info_nce(left, right, 0.1, nothing), info_nce(left, right, 0.1),
                               rtol=0, atol=0)


def test_masking_a_pair_removes_it_from_both_denominators():
    left, right = _unit(4, 3, 2), _unit(4, 3, 3)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    logits = left @ right.T / 0.2

    def row_loss(matrix, i):
        kept = [j for j in range(4) if not mask[i, j]]
        return -(matrix[i, i] - torch.logsumexp(matrix[i, kept], dim=0))

    expected = 0.5 * (torch.stack([row_loss(logits, i) for i in range(4)]).mean()
                      + torch.stack([row_loss(logits.T, i) for i in range(4)]).mean())
    torch.testing.assert_close(info_nce(left, right, 0.2, mask), expected)


def test_the_diagonal_is_never_masked():
    left, right = _unit(5, 4, 4), _unit(5, 4, 5)
    everything = torch.ones(5, 5, dtype=torch.bool)
    assert float(info_nce(left, right, 0.1, everything)) == pytest.approx(0.0, abs=1e-6)


def test_masked_info_nce_has_finite_gradients():
    left, right = _unit(6, 4, 24).requires_grad_(), _unit(6, 4, 25).requires_grad_()
    mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(26)) > 0.5
    info_nce(left, right, 0.05, mask).backward()
    assert torch.isfinite(left.grad).all() and torch.isfinite(right.grad).all()


def test_identity_soft_targets_equal_plain_info_nce():
    left, right = _unit(7, 4, 6), _unit(7, 4, 7)
    torch.testing.assert_close(info_nce(left, right, 0.1, targets=torch.eye(7)),
                               info_nce(left, right, 0.1))


def test_soft_cross_entropy_is_the_targets_entropy_when_the_softmax_matches_them():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(8))
    targets = torch.softmax(logits, dim=1)
    entropy = -(targets * targets.log()).sum(dim=1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, targets), entropy)
    assert float(soft_cross_entropy(logits, torch.eye(5))) > float(entropy) - 1e-6


def test_text_agreement_is_the_smaller_of_both_spaces_cosines():
    a, b = _unit(5, 6, 9), _unit(5, 3, 10)
    agreement = text_agreement(a * 3, b)  # raw rows need not be unit length
    torch.testing.assert_close(agreement, torch.minimum(a @ a.T, b @ b.T))


def test_batch_targets_follow_the_config():
    agreement = torch.tensor([[1.0, 0.95, 0.2], [0.95, 1.0, 0.5], [0.2, 0.5, 1.0]])
    assert batch_targets(agreement, MethodConfig()) == (None, None)
    assert batch_targets(None, MethodConfig(same_text_threshold=0.9)) == (None, None)
    mask, targets = batch_targets(agreement, MethodConfig(same_text_threshold=0.9))
    assert targets is None
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    _, targets = batch_targets(agreement, MethodConfig(soft_target_temperature=0.1))
    torch.testing.assert_close(targets, torch.softmax(agreement / 0.1, dim=1))


def test_paper_config_ignores_the_agreement():
    qa, qb, pa, pb = (_unit(8, 4, seed) for seed in range(11, 15))
    agreement = text_agreement(_unit(8, 6, 15), _unit(8, 5, 16))
    plain = cmcr_loss(qa, qb, pa, pb, MethodConfig())
    fed = cmcr_loss(qa, qb, pa, pb, MethodConfig(), agreement)
    assert plain.as_floats() == fed.as_floats()


def test_masking_lowers_both_inter_terms_when_texts_repeat():
    qa, qb, pa, pb = (_unit(8, 4, seed) for seed in range(17, 21))
    raw = _unit(4, 6, 21).repeat(2, 1)  # each text twice: rows i and i+4 mean the same
    agreement = text_agreement(raw, raw)
    plain = cmcr_loss(qa, qb, pa, pb, MethodConfig(temperature=1.0))
    masked = cmcr_loss(qa, qb, pa, pb, MethodConfig(temperature=1.0, same_text_threshold=0.99),
                       agreement)
    assert float(masked.inter_query) < float(plain.inter_query)
    assert float(masked.inter_pseudo) < float(plain.inter_pseudo)
    assert float(masked.intra) == float(plain.intra)


# -- dimension-scaled noise ------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [32, 512])
def test_dim_scaled_noise_gives_the_target_cosine(dim):
    config = MethodConfig(noise_cosine=0.7)
    x = _unit(3000, dim, 22)
    noisy = add_noise(x, noise_variance(config, dim), torch.Generator().manual_seed(23))
    assert (x * noisy).sum(dim=1).mean().item() == pytest.approx(0.7, abs=0.01)


def test_noise_variance_defaults_to_the_papers_noise_var():
    assert noise_variance(MethodConfig(), 32) == MethodConfig().noise_var
    assert noise_variance(MethodConfig(noise_var=0.02), 512) == 0.02
    assert noise_variance(MethodConfig(use_noise=False, noise_cosine=0.5), 64) == 0.0
    # the paper's 0.004 at d = 512 is noise_cosine 1/sqrt(1 + 512 * 0.004)
    cosine = 1 / math.sqrt(1 + 512 * 0.004)
    assert noise_variance(MethodConfig(noise_cosine=cosine), 512) == pytest.approx(0.004)


@pytest.mark.parametrize("key, value", [("noise_cosine", 0.0), ("noise_cosine", 1.0),
                                        ("same_text_threshold", 1.5),
                                        ("soft_target_temperature", 0.0)])
def test_recipe_options_are_range_checked(key, value):
    with pytest.raises(ConfigError, match=f"method.{key}"):
        MethodConfig(**{key: value})


def test_checkpoint_settings_leave_out_default_recipe_keys():
    from cmcr.method.train import _settings

    class Model:
        config = type("C", (), {"projectors": {}})()

    plain = _settings(ConnectConfig.from_dict(_raw()).train, MethodConfig(), Model())
    assert not set(RECIPE_METHOD_KEYS) & set(plain["method"])
    changed = _settings(ConnectConfig.from_dict(_raw()).train, MethodConfig(noise_cosine=0.6),
                        Model())
    assert changed["method"]["noise_cosine"] == 0.6


# -- the recipe registry and the config key --------------------------------------------------------
def test_recipe_defaults_to_the_paper():
    config = ConnectConfig.from_dict(_raw())
    assert config.recipe == "cmcr" and config.method == MethodConfig()


def test_unknown_recipe_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        ConnectConfig.from_dict(_raw(recipe="cmcr++"))
    for name in recipes.RECIPES:
        assert name in str(err.value)


def test_cmcr_plus_fills_the_registrys_method():
    config = ConnectConfig.from_dict(_raw(recipe="cmcr+"))
    assert config.method == MethodConfig(**recipes.RECIPES["cmcr+"])
    assert config.method != MethodConfig()


def test_recipe_fills_method_defaults_and_explicit_keys_win(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "test", {"noise_cosine": 0.6, "temperature": 0.2})
    config = ConnectConfig.from_dict(_raw(recipe="test", method={"temperature": 0.05}))
    assert (config.method.noise_cosine, config.method.temperature) == (0.6, 0.05)
    assert config.method.intra_weight == MethodConfig().intra_weight


def test_recipe_survives_a_save_and_load(monkeypatch, tmp_path):
    monkeypatch.setitem(recipes.RECIPES, "test", {"same_text_threshold": 0.8})
    config = ConnectConfig.from_dict(_raw(recipe="test"))
    save_config(config, tmp_path / "connect.yaml")
    loaded = load_connect_config(tmp_path / "connect.yaml")
    assert loaded.recipe == "test" and loaded.method == config.method


def test_recipe_can_be_set_from_the_command_line(monkeypatch, tmp_path):
    monkeypatch.setitem(recipes.RECIPES, "test", {"memory_top_k": 4})
    (tmp_path / "connect.yaml").write_text(yaml.safe_dump(_raw(method={"temperature": 0.05})))
    loaded = load_connect_config(tmp_path / "connect.yaml", ["recipe=test"])
    assert (loaded.method.memory_top_k, loaded.method.temperature) == (4, 0.05)


def test_extend_mode_takes_only_the_paper_recipe():
    with pytest.raises(ConfigError, match="extend mode"):
        ConnectConfig.from_dict(_raw(recipe="cmcr+", mode="extend"))


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_every_recipe_builds_a_valid_method(name):
    assert dataclasses.replace(MethodConfig(), **recipes.RECIPES[name])


@pytest.mark.parametrize("name", list(recipes.RECIPE_ADDITIONS))
def test_removing_every_addition_gives_back_the_paper(name):
    method = dict(recipes.RECIPES[name])
    for addition, removal in recipes.RECIPE_ADDITIONS[name].items():
        assert removal, addition
        assert set(removal) <= {f.name for f in dataclasses.fields(MethodConfig)}
        method.update(removal)
    assert MethodConfig(**method) == MethodConfig()


def test_extend_mode_refuses_recipe_method_keys():
    with pytest.raises(ConfigError, match="extend mode"):
        ConnectConfig.from_dict(_raw(mode="extend", method={"same_text_threshold": 0.9}))


# -- a second round of pseudo pairs ----------------------------------------------------------------
def _tiny_model(dim: int = 6):
    from cmcr.pipeline import build_model
    from cmcr.method.retrieval import as_store

    config = ConnectConfig.from_dict(_raw(projector={"hidden": 8, "out_dim": 4}))
    torch.manual_seed(0)
    stores = {name: as_store(_unit(4, dim, 0).numpy()) for name in config.space_names}
    return build_model(config, stores).eval()


def test_joint_space_pseudo_weights_raw_memory_rows_by_joint_similarity():
    from cmcr.pipeline import joint_space_pseudo
    from cmcr.method.retrieval import as_store

    model = _tiny_model()
    queries, memory = _unit(5, 6, 30), _unit(9, 6, 31) * 2  # raw rows are normalised
    pseudo = joint_space_pseudo(model, "clip", as_store(queries.numpy()), as_store(memory.numpy()),
                                0.5, None, chunk=2)
    joint = model.project("clip", queries) @ model.project("clip", memory).T
    expected = torch.softmax(joint / 0.5, dim=1) @ F.normalize(memory, dim=1)
    torch.testing.assert_close(torch.from_numpy(pseudo), expected)
    nearest = joint_space_pseudo(model, "clip", as_store(queries.numpy()), as_store(memory.numpy()),
                                 0.5, 1)
    torch.testing.assert_close(torch.from_numpy(nearest),
                               F.normalize(memory, dim=1)[joint.argmax(dim=1)])


def test_a_second_round_trains_again(tmp_path):
    from cmcr.pipeline import connect
    from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example

    sizes = SyntheticSizes(texts=200, images=100, audio=100, test_pairs=20, dim_a=8, dim_b=6)
    path = write_synthetic_example(tmp_path / "data", seed=1, sizes=sizes, epochs=1, batch_size=64)
    config = load_connect_config(path, ["method.pseudo_rounds=2"])
    connect(config, tmp_path / "run", device="cpu", progress=False)
    for round_dir in ("training", "training-round2"):
        assert (tmp_path / "run" / round_dir / "checkpoint.pt").is_file()
