"""The layer contract, for every registered layer type (FC) and conv block type, at their default options:
shapes, seed-batched == separate, no gradient across layers, export parity, statistics. A new type
registered in one file (see type_toy.py) is covered with no other file touched."""
import pytest
import torch

from ffhw.config import RunConfig
from ffhw.data import Split
from ffhw.export import export_layers
from ffhw.hardware import cost_model
from ffhw.layers import CONV_TYPES, LAYER_TYPES
from ffhw.metrics import evaluate_split as evaluate
from ffhw.model import FFNet

CASES = [(name, False) for name in sorted(LAYER_TYPES)] + [(name, True) for name in sorted(CONV_TYPES)]
IDS = [f"{name}-{'conv' if conv else 'fc'}" for name, conv in CASES]


def build(layer_type, conv, seeds=1, seed=0):
    cfg = RunConfig()
    cfg.model.layer_type, cfg.train.seeds, cfg.train.seed = layer_type, seeds, seed
    if conv:
        cfg.model.architecture, cfg.model.width_scale, cfg.data.encoding, cfg.train.head = "small", 1 / 16, "channel", False
        cfg.model.goodness, cfg.model.loss, cfg.model.peer_norm, cfg.model.classifier_layers = "mean", "symba", 0.0, "all"
    else:
        cfg.model.hidden = [24, 16]
    return FFNet(cfg.validate(), (1, 28, 28), 10)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) > 0.6).float(), torch.randint(0, 10, (n,), generator=g)


def layer_outputs(model, images, y):
    """Every layer's output in a training step (positives, then negatives; the neutral pass with a head)."""
    s = model.seeds
    labels = torch.stack([y, (y + 1) % 10]).unsqueeze(0).expand(s, 2, len(y))
    first, neutral = model.first_layer_label_sets(images.unsqueeze(0).expand(s, *images.shape), labels,
                                                  neutral=bool(model.head_weight.shape[1]))
    return [first, *model.forward_layers(first.out, start=1)], neutral


@pytest.mark.parametrize("layer_type,conv", CASES, ids=IDS)
def test_shapes(layer_type, conv):
    model = build(layer_type, conv, seeds=2).train()
    images, y = batch()
    outputs, neutral = layer_outputs(model, images, y)
    for layer, out in zip(model.layers, outputs):
        assert out.act.shape[:2] == (2, 12) and out.act[0, 0].numel() == layer.units
        assert torch.isfinite(out.act).all()
    if neutral is not None:
        assert neutral.act.shape[:2] == (2, 6) and not neutral.act.requires_grad
    model.eval()
    goodness, logits, stats = model.evaluate_batch(images, with_head=neutral is not None)
    assert goodness.shape == (len(model.layers), 2, 6, 10)
    assert len(stats) == len(model.layers)
    for layer, st in zip(model.layers, stats):
        assert st.pop("unit_activity").shape == (2, layer.units)  # rows each unit was active in
        assert all(v.shape == (2,) for v in st.values())


@pytest.mark.parametrize("layer_type,conv", CASES, ids=IDS)
def test_seed_batched_equals_separate(layer_type, conv):
    """Seed 1 of a two-seed network is the one-seed network of seed 1: same weights, same outputs."""
    both, alone = build(layer_type, conv, seeds=2).eval(), build(layer_type, conv, seeds=1, seed=1).eval()
    images, _ = batch()
    g_both, _, _ = both.evaluate_batch(images, with_head=False)
    g_alone, _, _ = alone.evaluate_batch(images, with_head=False)
    assert torch.allclose(g_both[:, 1], g_alone[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer_type,conv", CASES, ids=IDS)
def test_no_gradient_crosses_layers(layer_type, conv):
    model = build(layer_type, conv).train()
    images, y = batch()
    learned = []
    for k in range(1, len(model.layers)):
        model.zero_grad(set_to_none=True)
        outputs, _ = layer_outputs(model, images, y)
        g = model.objectives[k].goodness(outputs[k].act)
        model.objectives[k].loss(g[:, :6], g[:, 6:]).sum().backward()
        own = [p.grad for p in model.layers[k].parameters() if p.requires_grad]
        learned.append(any(gr is not None and gr.abs().sum() > 0 for gr in own))
        below = [*model.encoding.parameters(), *(p for j in range(k) for p in model.layers[j].parameters())]
        assert all(p.grad is None or not p.grad.any() for p in below), f"layer {k}'s loss reached a layer below"
    # layer 1 at least must learn, or the check could not tell (deeper spiking blocks may start silent)
    assert learned[0], "layer 1 got no gradient from its own loss"


@pytest.mark.parametrize("layer_type,conv", CASES, ids=IDS)
def test_export_parity(layer_type, conv, tmp_path):
    """Every layer of a seed exports to ONNX and onnxruntime agrees with torch within the type's tolerance
    (export_layers raises otherwise)."""
    model = build(layer_type, conv, seeds=2).eval()
    images, y = batch(16)
    entries, cores = export_layers(model, 1, model.goodness_kind, images, y, tmp_path, log=lambda *a: None)
    assert len(entries) == len(cores) == len(model.layers)
    assert all(e["parity"]["ok"] for e in entries)


@pytest.mark.parametrize("layer_type,conv", CASES, ids=IDS)
def test_statistics(layer_type, conv):
    model = build(layer_type, conv, seeds=2)
    images, y = batch(8)
    split = Split((images * 255).to(torch.uint8), y)
    result = evaluate(model, split, (y + 1) % 10, batch=4, head=bool(model.head_weight.shape[1]))
    n = len(model.layers)
    for key, value in result.items():
        assert value.shape == ((n, 2) if key.startswith("layer/") else (2,)) and torch.isfinite(value).all(), key
    assert ((result["layer/sparsity"] >= 0) & (result["layer/sparsity"] <= 1)).all()
    for layer in model.layers:
        assert layer.parameters_per_seed() > 0 and layer.deployed_weight_bytes() > 0
        assert {"macs", "mac_kind", "nonzero_macs", "acs", "neuron_updates", "bops"} <= set(layer.op_counts(0.5))
    numbers = type(model.layers[0]).describe(model.options)
    assert {"weight_bits", "act_bits", "steps", "label"} <= set(numbers)
    cost = cost_model(model, images)
    assert len(cost["layers"]) == n and cost["deployed_weight_bytes"] > 0


@pytest.mark.parametrize("layer_type,conv", CASES, ids=IDS)
def test_nir_form_or_one_line_refusal(layer_type, conv):
    """Every type either writes its layers as NIR that reproduces its exported spikes, or refuses in one line."""
    from ffhw.errors import ExportError
    pytest.importorskip("nir")
    pytest.importorskip("nirtorch")
    from ffhw.deploy_nir import DT, graph_of, run_nirtorch
    model = build(layer_type, conv).eval()
    images, y = batch()
    x = model.encoding.export_front(0)(images, y)
    for layer in model.layers:
        try:
            part = layer.export_nir(0, DT)
        except ExportError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        x = x if layer.takes_label_input() or layer.index > 0 else layer.export_input(x)
        feed = layer.nir_input(x)
        with torch.no_grad():
            _, x = layer.export_module(0).eval()(x)
        assert torch.equal(run_nirtorch(graph_of([part], {}), feed).reshape(x.shape), x)
