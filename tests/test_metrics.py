"""Layer health: dead and always-on units in every evaluation, and a warning when a layer is silent or saturated."""
import torch

from conftest import small_config
from ffhw.layers import LayerOutput
from ffhw.metrics import HEALTH_LIMIT, evaluate_split, layer_health
from ffhw.model import FFNet
from ffhw.train import Trainer


def test_unit_activity_counts_rows_per_unit():
    model = FFNet(small_config(hidden=(4,)).validate(), (1, 28, 28), 10)
    act = torch.tensor([[[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])  # [S=1, rows=3, U=4]
    counts = model.layers[0].unit_activity(LayerOutput(act=act, out=act))
    assert counts.tolist() == [[0.0, 3.0, 1.0, 0.0]]  # units 0 and 3 dead, unit 1 always on


def test_health_flags_layers_by_seed():
    metrics = {"layer/dead_units": torch.tensor([[0.0, 0.95], [1.0, 1.0]]),
               "layer/always_on_units": torch.tensor([[0.95, 0.0], [0.0, HEALTH_LIMIT - 0.01]])}
    found = layer_health(metrics, [7, 8])
    assert {(f["layer"], f["condition"], tuple(f["seeds"])) for f in found} == {
        (0, "silent", (8,)), (1, "silent", (7, 8)), (0, "saturated", (7,))}


class Recorder:
    def __init__(self):
        self.warnings = []

    def start(self, *a):
        pass

    def batch(self):
        pass

    def epoch(self, *a):
        pass

    def warn(self, message):
        self.warnings.append(message)

    def done(self, *a):
        pass


def test_a_silent_network_is_warned_about_and_recorded(mnist_small):
    cfg = small_config("spiking", hidden=(32, 32), epochs=1)
    cfg.data.train_subset = 200
    cfg.model.layer = {"threshold": 1e6, "steps": 2}  # no membrane ever reaches it: every layer silent
    ui = Recorder()
    trainer = Trainer(cfg.validate(), mnist_small, FFNet(cfg, mnist_small.image_shape, 10), torch.device("cpu"), ui=ui)
    summary = trainer.fit()
    assert len(ui.warnings) == 2 and all("is silent after epoch 1: 100% of its units never fire" in w for w in ui.warnings)
    assert [(w["layer"], w["condition"]) for w in summary["layer_warnings"]] == [(0, "silent"), (1, "silent")]


def test_a_healthy_network_gets_no_warning_and_records_unit_shares(mnist_small):
    cfg = small_config(hidden=(64, 64), epochs=1)
    cfg.data.train_subset = 600
    ui = Recorder()
    trainer = Trainer(cfg.validate(), mnist_small, FFNet(cfg, mnist_small.image_shape, 10), torch.device("cpu"), ui=ui)
    summary = trainer.fit()
    assert ui.warnings == [] and "layer_warnings" not in summary
    val = evaluate_split(trainer.model, mnist_small.val, trainer.eval_negatives("val", mnist_small.val), 500, True)
    assert val["layer/dead_units"].shape == val["layer/always_on_units"].shape == (2, 1)
    assert (val["layer/dead_units"] < 0.5).all()
