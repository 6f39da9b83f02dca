import pytest

from ffhw.config import RunConfig, dumps, load_preset, override, parse_hidden
from ffhw.errors import ConfigError


def test_parse_hidden_forms():
    assert parse_hidden("4x2000") == [2000] * 4
    assert parse_hidden("500,300") == [500, 300]
    with pytest.raises(ConfigError, match="DEPTHxWIDTH"):
        parse_hidden("four")


def test_override_types_and_unknown_keys():
    cfg = RunConfig()
    override(cfg, "train.lr", "0.01")
    override(cfg, "train.head", "false")
    override(cfg, "model.layer.steps", "4")
    assert cfg.train.lr == 0.01 and cfg.train.head is False and cfg.model.layer == {"steps": 4}
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        override(cfg, "train.lrr", "1")
    with pytest.raises(ConfigError, match="not a valid int"):
        override(cfg, "train.epochs", "1.5")


def test_validate_rejects_bad_choices():
    cfg = RunConfig()
    cfg.model.loss = "hinge"
    with pytest.raises(ConfigError, match="model.loss"):
        cfg.validate()


def test_every_preset_loads_and_round_trips():
    from ffhw.config import repo_root
    names = [p.stem for p in (repo_root() / "models").glob("*.toml")]
    assert {"quick", "loewex-mnist", "hinton-mnist", "standard", "quantized", "spiking"} <= set(names)
    for name in names:
        cfg = load_preset(name).validate()
        import tomllib
        assert RunConfig.from_dict(tomllib.loads(dumps(cfg))) == cfg


def test_missing_preset_lists_available():
    with pytest.raises(ConfigError, match="available: .*quick"):
        load_preset("no-such-preset")


def test_configs_saved_with_a_boolean_compile_still_load():
    assert RunConfig.from_dict({"train": {"compile": True}}).validate().train.compile == "on"
    assert RunConfig.from_dict({"train": {"compile": False}}).validate().train.compile == "off"
    cfg = RunConfig()
    override(cfg, "train.compile", "false")  # as --set train.compile=false gives it
    assert cfg.train.compile == "off"
    with pytest.raises(ConfigError, match="train.compile"):
        RunConfig.from_dict({"train": {"compile": "sometimes"}}).validate()
