"""Config precedence, validation messages, and the configs/ <-> registry agreement."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from braintumor.config import Config, build, configs_dir, load_config, parse_set, read_yaml
from braintumor.errors import ConfigError


def test_precedence_defaults_yaml_flags_set(tmp_path: Path):
    y = tmp_path / "c.yaml"
    y.write_text("model: {arch: customnet}\ntrain: {epochs: 7, batch_size: 16, lr: 0.01}\n")
    cfg = load_config(config_path=y, flags={"epochs": 9, "batch_size": None}, sets=["train.epochs=11"])
    assert cfg.train.epochs == 11  # --set beats the flag
    assert cfg.train.batch_size == 16  # YAML beats the default, an unset flag changes nothing
    assert cfg.train.lr == 0.01
    assert cfg.train.optimizer == Config().train.optimizer  # default where nobody spoke
    cfg = load_config(config_path=y, flags={"epochs": 9})
    assert cfg.train.epochs == 9  # the flag beats YAML


def test_arch_flag_picks_its_yaml():
    cfg = load_config(arch="resnet50")
    assert cfg.model.arch == "resnet50" and cfg.model.weights == "imagenet" and cfg.data.image_size == 224


def test_unknown_key_suggests_close_match(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*did you mean 'epochs'"):
        load_config(arch="customnet", sets=["train.epoch=3"])
    y = tmp_path / "c.yaml"
    y.write_text("modle: {arch: customnet}\n")
    with pytest.raises(ConfigError, match=r"'modle'.*did you mean 'model'"):
        load_config(config_path=y)


@pytest.mark.parametrize("item, pattern", [
    ("train.epochs=abc", r"train.epochs: expected a whole number, got 'abc'"),
    ("train.optimizer=adamm", r"train.optimizer: 'adamm' is not valid; choose one of adam, adamw, sgd"),
    ("data.val_split=1.5", r"data.val_split: 1.5 is not valid"),
    ("model.weights=/no/such/file.h5", r"model.weights: '/no/such/file.h5' is not valid; use imagenet, none"),
    ("data.augment.flip_horizontal=maybe", r"data.augment.flip_horizontal: expected true or false"),
    ("train.lr", r"expected section.key=value"),
])
def test_bad_values_name_key_value_and_choices(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(arch="customnet", sets=[item])


def test_unknown_arch_suggests():
    with pytest.raises(ConfigError, match=r"no config for architecture 'resnet5'.*did you mean 'resnet50'"):
        load_config(arch="resnet5")


def test_exponent_without_dot_is_a_number(tmp_path: Path):
    """YAML 1.1 reads 3e-4 as text; the README's own example must still work."""
    assert load_config(arch="customnet", sets=["train.lr=3e-4"]).train.lr == 3e-4
    y = tmp_path / "c.yaml"
    y.write_text("model: {arch: customnet}\ntrain: {lr: 5e-4}\n")
    assert load_config(config_path=y).train.lr == 5e-4


def test_set_parses_lists_and_types():
    assert parse_set("model.filters=[8, 16]") == ("model.filters", [8, 16])
    cfg = load_config(arch="customnet", sets=["model.filters=[8,16]", "data.classes=[a, b]", "eval.tta=true"])
    assert cfg.model.filters == (8, 16) and cfg.data.classes == ("a", "b") and cfg.eval.tta is True


def test_resolved_config_round_trips(tmp_path: Path):
    cfg = load_config(arch="mobilenet", flags={"epochs": 3, "seed": 5}, sets=["train.lr=0.0003"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(config_path=path)
    assert again == cfg
    assert build(Config, yaml.safe_load(cfg.to_yaml())) == cfg


def test_config_stem_equals_registry_key_equals_arch():
    from braintumor.models import available

    stems = sorted(p.stem for p in configs_dir().glob("*.yaml"))
    assert stems == available()
    for stem in stems:
        assert load_config(config_path=configs_dir() / f"{stem}.yaml").model.arch == stem


def test_a_recipe_inherits_its_base_and_overrides_only_what_it_sets(tmp_path: Path):
    plain = load_config("customnet")
    guided = load_config(config_path=configs_dir() / "recipes" / "customnet-guided.yaml")
    assert guided.train.guidance > 0 and guided.train.guidance_layers and guided.eval.cam_layers
    assert guided.model == plain.model and guided.data.augment == plain.data.augment
    assert guided.eval.tta == plain.eval.tta
    (tmp_path / "mine.yaml").write_text("base: customnet.yaml\ntrain:\n  epochs: 3\n")
    (tmp_path / "customnet.yaml").write_text("base: customnet\ntrain:\n  lr: 0.5\n")  # a file beside it
    mine = load_config(config_path=tmp_path / "mine.yaml")
    assert (mine.train.epochs, mine.train.lr, mine.train.batch_size) == (3, 0.5, plain.train.batch_size)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="refers back to itself"):
        load_config(config_path=tmp_path / "loop.yaml")
    (tmp_path / "typo.yaml").write_text("base: custmnet\n")
    with pytest.raises(ConfigError, match="customnet"):
        load_config(config_path=tmp_path / "typo.yaml")


def test_every_yaml_key_is_commented_with_a_type():
    for path in [*configs_dir().glob("*.yaml"), *configs_dir().glob("recipes/*.yaml")]:
        for line in path.read_text().splitlines():
            if re.match(r"^\s*[a-z_]+:\s*[^#\s]", line):  # a key with a value (sections have none)
                assert re.search(r"#\s*\(", line), f"{path.name}: key without a '# (type) meaning' comment: {line}"


def test_a_saved_config_loads_after_its_weights_file_moved(tmp_path: Path):
    """A run's config.yaml is a record: it must load for evaluate/cam/serve even when the weights file is gone;
    new work that would read the file is still refused by name."""
    w = tmp_path / "w.weights.h5"
    w.write_bytes(b"")
    cfg = load_config(arch="customnet", sets=[f"model.weights={w}"])
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.to_yaml())
    w.unlink()
    assert build(Config, read_yaml(saved)).model.weights == str(w)
    with pytest.raises(ConfigError, match=r"model.weights: .* is not valid; use imagenet, none"):
        load_config(config_path=saved)
