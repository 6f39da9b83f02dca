"""The nested depth design: a shallower network is a prefix of the deeper one, with its own classifiers."""
import pytest
import torch

from conftest import small_config


def train(cfg, data):
    from ffhw.model import FFNet
    from ffhw.train import Trainer
    model = FFNet(cfg, data.image_shape, data.num_classes)
    trainer = Trainer(cfg, data, model, torch.device("cpu"))
    trainer.fit()
    return model, trainer.rows


def value(rows, split, metric, seed=0):
    return [r["value"] for r in rows if r["split"] == split and r["layer"] == "net" and r["metric"] == metric
            and r["seed"] == seed]


@pytest.fixture(scope="module")
def pair(mnist_small):
    """A 3-layer network with prefix depths [1, 2] and a separately trained 2-layer one, same seeds."""
    deep = small_config(hidden=(40, 40, 40), epochs=2, seeds=2, train_metrics=False)
    deep.model.prefix_depths = [1, 2]
    shallow = small_config(hidden=(40, 40), epochs=2, seeds=2, train_metrics=False)
    return train(deep.validate(), mnist_small), train(shallow.validate(), mnist_small)


def test_prefix_equals_the_shallower_network_bit_for_bit(pair):
    (deep, _), (shallow, _) = pair
    for a, b in zip(deep.layers[:2], shallow.layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_prefix_head_trains_as_the_shallower_networks_head(pair):
    (deep, deep_rows), (shallow, rows) = pair
    i = deep.prefix_depths.index(2)
    assert torch.equal(deep.prefix_head_weights[i], shallow.head_weight)
    assert torch.equal(deep.prefix_head_biases[i], shallow.head_bias)
    for split in ("val", "test"):
        assert value(deep_rows, split, "acc_head@2") == value(rows, split, "acc_head")
        assert value(deep_rows, split, "acc_goodness@2") == value(rows, split, "acc_goodness")
    assert value(deep_rows, "val", "acc_head@1") and not torch.equal(deep.prefix_head_weights[0], deep.head_weight[:, :40])


def test_prefixes_are_refused_where_they_are_not_exact():
    from ffhw.errors import ConfigError
    for change in ({"train.schedule": "greedy", "train.epochs": 4}, {"train.schedule": "apl"},
                   {"model.prefix_depths": [3]}, {"model.prefix_depths": [0]}):
        cfg = small_config(hidden=(20, 20, 20))
        cfg.model.prefix_depths = [2]
        from ffhw.config import override
        for key, v in change.items():
            override(cfg, key, v)
        with pytest.raises(ConfigError, match="prefix"):
            cfg.validate()


def test_nested_design_trains_only_the_deepest_network_per_width():
    from ffhw.config import find_preset, load_toml
    from ffhw.study import Study
    definition = load_toml(find_preset("depth_correlation", "experiments"))
    definition["grids"]["tiny"]["design"] = "nested"
    definition["grids"]["tiny"]["factors"] = {"depth": [2, 3, 4], "width": [16, 24]}
    study = Study(definition, "tiny", "standard")
    units = study.units(seed_batch=2)
    assert sorted((u.factors["depth"], u.factors["width"]) for u in units) == [(4, 16), (4, 24)]
    assert all(u.config["model"]["prefix_depths"] == [2, 3] for u in units)
    definition["grids"]["tiny"]["design"] = "independent"
    seeds = {u.key: u.seeds for u in Study(definition, "tiny", "standard").units(seed_batch=2)}
    assert len(seeds) == 6 and len({s[0] for s in seeds.values()}) == 6  # no two configurations share seeds
    definition["grids"]["tiny"]["design"] = "sideways"
    with pytest.raises(Exception, match="design"):
        Study(definition, "tiny", "standard").units()
