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


def bad_values(rng):
    """Values just outside a Range, and the non-finite ones every float option refuses."""
    out = []
    if rng.low is not None:
        out.append(rng.low if rng.low_open else rng.low - 1)
    if rng.high is not None:
        out.append(rng.high if rng.high_open else rng.high + 1)
    return out


@pytest.mark.parametrize("path", sorted(__import__("ffhw.config", fromlist=["RANGES"]).RANGES))
def test_every_numeric_option_is_range_checked(path):
    from ffhw.config import RANGES, get_path
    cfg = RunConfig()
    floats = isinstance(get_path(cfg, path), float)
    for value in bad_values(RANGES[path]) + ([float("nan"), float("inf")] if floats else []):
        cfg = RunConfig()
        override(cfg, path, value)
        with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
            cfg.validate()


@pytest.mark.parametrize("options,message", [
    ({"beta": float("nan")}, "model.layer.beta = nan must be a finite number"),
    ({"beta": 1.5}, "model.layer.beta = 1.5 is out of range"),
    ({"threshold": 0.0}, "model.layer.threshold = 0.0 is out of range"),
    ({"slope": -2.0}, "model.layer.slope"),
    ({"steps": 0}, "steps = 0 must be at least 1"),
    ({"beta": "fast"}, "model.layer.beta = 'fast' is not a valid float"),
])
def test_layer_options_are_checked_like_config_values(options, message):
    from ffhw.layers import get_layer_type
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        get_layer_type("spiking").resolve_options(options)


def test_greedy_schedule_needs_an_epoch_per_layer():
    cfg = RunConfig()
    cfg.model.hidden, cfg.train.schedule, cfg.train.epochs = [100] * 4, "greedy", 2
    with pytest.raises(ConfigError, match="train.epochs = 2 leaves some of the 4 layers untrained"):
        cfg.validate()
    cfg.train.epochs = 4
    cfg.validate()
    conv = RunConfig()
    conv.model.architecture, conv.data.encoding, conv.train.head = "small", "channel", False
    conv.train.schedule, conv.train.epochs = "greedy", 4
    with pytest.raises(ConfigError, match="of the 6 layers"):  # the small conv network has 6 blocks
        conv.validate()


def test_fp16_with_several_seeds_is_refused():
    cfg = RunConfig()
    cfg.train.autocast, cfg.train.seeds = "fp16", 2
    with pytest.raises(ConfigError, match="bf16"):
        cfg.validate()
    cfg.train.seeds = 1
    cfg.validate()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "x" * 201, "-rf"])
def test_names_that_become_directories_are_one_component(name):
    from ffhw.config import safe_component
    with pytest.raises(ConfigError, match="one directory name"):
        safe_component(name, "--name")
    assert safe_component("depth-8_width-100_seed-0", "cell") == "depth-8_width-100_seed-0"
