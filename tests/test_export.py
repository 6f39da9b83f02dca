import importlib.util
import json

import pytest
import torch

from ffhw.export import ExportError, decision_flips, export_run, rounding_slack, verify_bundle
from ffhw.run import main

TYPES = {
    "standard": [],
    "quantized-8": ["--layer-type", "quantized", "--set", "model.layer.weight_bits=8"],
    "quantized-4": ["--layer-type", "quantized", "--set", "model.layer.weight_bits=4", "--set", "model.layer.act_bits=4"],
    "spiking": ["--layer-type", "spiking", "--theta", "0.2", "--set", "model.layer.steps=4"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for name, flags in TYPES.items():
        argv = ["--hidden", "48,32", "--epochs", "1", "--train-subset", "500", "--set", "data.val_size=200",
                "--optimizer", "adam", "--lr", "3e-3", "--quiet", "--out", str(out), "--name", name, *flags]
        assert main(argv) == 0
    return out


@pytest.mark.parametrize("name", list(TYPES))
def test_export_checks_parity_and_writes_manifest(name, runs, tmp_path):
    bundle = export_run(runs / name, tmp_path, log=lambda *a: None)
    manifest = verify_bundle(bundle)
    assert manifest["layer_type"] == name.split("-")[0]
    assert [e["file"] for e in manifest["layers"]] == ["layer_00.onnx", "layer_01.onnx"]
    assert set(manifest["files"]) == {"layer_00.onnx", "layer_01.onnx", "classifier.onnx"}
    first = manifest["layers"][0]
    assert first["inputs"] == {"image": ["batch", 1, 28, 28], "label": ["batch"]}
    assert all(e["parity"]["ok"] for e in manifest["layers"])
    classifier = manifest["classifier_model"]
    assert classifier["decisions_differing_beyond_ties"] <= 0.0005 * classifier["test_images"]
    # near-chance test networks: tied scores may flip, but only a few
    assert abs(classifier["test_accuracy_onnxruntime"] - classifier["test_accuracy_torch"]) <= 0.005
    assert not list(bundle.glob("*.data"))  # no external-data side files
    if name.startswith("quantized"):
        assert first["weight_bits"] == int(name[-1])
        ops = set(first["optimized_ops"])
        assert ops & {"QGemm", "QLinearMatMul", "MatMulInteger"}, ops
    if name == "spiking":
        assert manifest["layers"][1]["inputs"] == {"x": ["batch", 4, 48]} and first["steps"] == 4


def test_tampered_or_mismatched_bundle_is_refused(runs, tmp_path):
    bundle = export_run(runs / "standard", tmp_path, log=lambda *a: None)
    layer = bundle / "layer_01.onnx"
    original = layer.read_bytes()
    layer.write_bytes(original[:-10] + b"0123456789")
    with pytest.raises(ExportError, match="layer_01.onnx does not match its sha256"):
        verify_bundle(bundle)
    layer.write_bytes(original)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["layers"][1]["inputs"] = {"x": ["batch", 999]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="do not match the manifest"):
        verify_bundle(bundle)
    (bundle / "classifier.onnx").unlink()
    with pytest.raises(ExportError, match="classifier.onnx listed in the manifest is missing"):
        verify_bundle(bundle)
    with pytest.raises(ExportError, match="not an ffhw export bundle"):
        verify_bundle(tmp_path)


def test_existing_bundle_is_not_overwritten(runs, tmp_path):
    export_run(runs / "standard", tmp_path, log=lambda *a: None)
    with pytest.raises(ExportError, match="already holds a bundle"):
        export_run(runs / "standard", tmp_path, log=lambda *a: None)


def test_bench_reports_latency_percentiles_for_ort_and_torch(runs, tmp_path):
    from ffhw.bench import bench_bundle
    bundle = export_run(runs / "quantized-8", tmp_path, log=lambda *a: None)
    report = bench_bundle(bundle, batch=32, iterations=10, log=lambda *a: None)
    assert [r["model"] for r in report["results"]] == ["layer_00.onnx", "layer_01.onnx", "classifier.onnx"]
    for r in report["results"]:
        for key in ("ort_b1_t1", "torch_b1_t1"):
            assert 0 < r[key]["p50_ms"] <= r[key]["p90_ms"] <= r[key]["p99_ms"]
        assert r["ort_b32_t1"]["samples_per_s"] > 0 and r["bytes"] > 0
    assert report["versions"]["onnxruntime"]


@pytest.mark.parametrize("name", list(TYPES))
def test_cost_model_counts(name, runs, mnist_small):
    from ffhw.hardware import ENERGY_PJ, cost_model
    from ffhw.model import load_model
    model, _ = load_model(runs / name)
    cost = cost_model(model, mnist_small.test.images(slice(0, 200)))
    first, second = cost["layers"]
    assert first["in"] == 784 and first["out"] == 48 and second["in"] == 48
    assert 0.0 <= first["output_sparsity"] <= 1.0 and 0 < first["input_density"] < 1
    if name == "spiking":
        # layer 0: direct-encoded current computed once; layer 1: one accumulate per input spike and fan-out
        assert first["macs"] == 784 * 48 and first["acs"] == 0 and first["neuron_updates"] == 4 * 48
        rate = first["spike_rate"]
        assert second["macs"] == 0 and second["acs"] == pytest.approx(rate * 48 * 4 * 32, rel=1e-6)
        assert second["energy_pj_estimate"] == pytest.approx(second["acs"] * ENERGY_PJ["fp32_ac"]
                                                             + 4 * 32 * ENERGY_PJ["neuron_update"])
    else:
        assert second["macs"] == 48 * 32
        assert second["nonzero_macs"] == pytest.approx(48 * 32 * (1 - first["output_sparsity"]), rel=1e-6)
    if name.startswith("quantized"):
        bits = int(name[-1])
        assert second["bops"] == second["macs"] * bits * 8 and second["mac_kind"] == "int8_mac"
        assert cost["deployed_weight_bytes"] < 784 * 48 * 4
    goodness_total = cost["energy_per_classification_pj_estimate"]["goodness"]
    assert goodness_total == pytest.approx(first["energy_pj_estimate"] + 10 * second["energy_pj_estimate"])


@pytest.mark.parametrize("name", ["quantized-8", "quantized-4"])
def test_qonnx_files_run_in_qonnx_executor_within_one_step(name, runs, tmp_path):
    pytest.importorskip("qonnx")
    import onnx
    bundle = export_run(runs / name, tmp_path, qonnx=True, log=lambda *a: None)
    manifest = verify_bundle(bundle)
    bits = int(name[-1])
    for k, entry in enumerate(manifest["layers"]):
        assert entry["qonnx_file"] == f"layer_{k:02d}.qonnx.onnx" and entry["qonnx_file"] in manifest["files"]
        assert entry["qonnx_parity"]["ok"] and entry["qonnx_parity"]["value"] <= 1.0 and entry["qonnx_parity"]["samples"] == 32
        cost = entry["qonnx_cost"]
        macs = entry["in_features"] * entry["out_features"]
        assert cost["macs"] == macs and cost["weights"] == macs  # batch 1: one pass of one sample
        assert cost["weight_bits"] == macs * bits and cost["bops"] == macs * bits * 8  # 8-bit input quantizer
    ops = {(n.op_type, n.domain) for n in onnx.load(str(bundle / "layer_00.qonnx.onnx")).graph.node}
    assert ("Quant", "qonnx.custom_op.general") in ops
    plain = export_run(runs / "standard", tmp_path, qonnx=True, log=lambda *a: None)
    assert not list(plain.glob("*.qonnx.onnx"))  # float layers have no QONNX form


def test_qonnx_check_fails_on_a_wrong_file(runs, tmp_path):
    """The executed comparison can fail: a QONNX file of the wrong seed is refused."""
    pytest.importorskip("qonnx")
    from ffhw.deploy_qonnx import write_qonnx
    from ffhw.export import LayerGraph
    from ffhw.model import load_model
    model, cfg = load_model(runs / "quantized-8")
    layer = model.layers[1]
    x = torch.rand(8, layer.in_features, generator=torch.Generator().manual_seed(0))
    graph = LayerGraph(layer.export_module(0).eval(), cfg.model.goodness).eval()
    with torch.no_grad():
        reference = graph(x)[0] * 1.5 + layer.output_step(0) * 3  # not what the file computes
    with pytest.raises(ExportError, match="qonnx's executor differs from torch"):
        write_qonnx(layer, graph, (x,), ["x"], tmp_path / "l.qonnx.onnx", reference)


CONV = [("standard", {}), ("quantized", {"weight_bits": 8}), ("quantized-4", {"weight_bits": 4, "act_bits": 4}),
        ("spiking", {"steps": 2}), ("spiking-or", {"steps": 2, "conv_pool": "spikes"})]


@pytest.fixture(scope="module")
def conv_runs(tmp_path_factory, mnist_conv):
    import torch
    from layers.test_conv import conv_config
    from ffhw.model import FFNet
    from ffhw.records import RunDir
    from ffhw.train import Trainer
    out = tmp_path_factory.mktemp("conv")
    for name, options in CONV:
        cfg = conv_config(name.split("-")[0], options, epochs=1, lr=1e-2, batch_size=100)
        cfg.data.val_size, cfg.data.train_subset = 1000, 3000  # what export reloads: the same split
        run = RunDir.create(out / name, cfg)
        Trainer(cfg, mnist_conv, FFNet(cfg, mnist_conv.image_shape, 10), torch.device("cpu"), run).fit()
    return out


@pytest.mark.parametrize("layer_type", [t for t, _ in CONV])
def test_conv_export_parity(layer_type, conv_runs, tmp_path):
    qonnx = layer_type.startswith("quantized") and importlib.util.find_spec("qonnx") is not None
    bundle = export_run(conv_runs / layer_type, tmp_path, parity_samples=64, accuracy_samples=300, qonnx=qonnx,
                        log=lambda *a: None)
    manifest = verify_bundle(bundle)
    assert len(manifest["layers"]) == 6 and all(e["parity"]["ok"] for e in manifest["layers"])
    assert manifest["layers"][0]["inputs"] == {"image": ["batch", 1, 28, 28], "label": ["batch"]}
    if qonnx:  # FINN's form of the conv blocks, executed by qonnx
        # the layer's own check owns the float slack; here only its tolerance is pinned to one output step
        assert all(e["qonnx_parity"]["ok"] and e["qonnx_parity"]["tolerance"] <= 1.0 for e in manifest["layers"]), \
            [e["qonnx_parity"]["value"] for e in manifest["layers"]]
    if layer_type.startswith("quantized"):
        assert "QLinearConv" in manifest["layers"][1]["optimized_ops"] or "ConvInteger" in manifest["layers"][1]["optimized_ops"]
    if layer_type == "spiking":
        assert manifest["layers"][1]["inputs"] == {"x": ["batch", 2, 8, 14, 14]}


def test_classifier_check_ignores_float_ties_but_counts_real_flips():
    scores = torch.tensor([[1.0, 1.0 - 1e-7, 0.2], [0.1, 0.9, 0.5], [3.0, 2.0, 1.0]])
    assert decision_flips(scores, torch.tensor([0, 1, 0])) == 0
    assert decision_flips(scores, torch.tensor([1, 1, 0])) == 0  # a tie to float rounding
    assert decision_flips(scores, torch.tensor([0, 2, 1])) == 2  # clearly worse choices


class _RoundingGraph(torch.nn.Module):
    """Class scores that pass through a quantizer: image 0 sits exactly on a rounding boundary."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))

    def forward(self, x):
        return torch.round(x @ self.w)


def test_classifier_check_excuses_flips_at_rounding_boundaries_only():
    graph, images = _RoundingGraph(), torch.tensor([[2.5, 2.0], [3.0, 1.0]])
    scores = graph(images)  # [[2, 2], [3, 1]]: image 0 tied by round-half-even, image 1 clear
    slack = rounding_slack(graph, images, scores)
    assert slack[0] == 1.0 and slack[1] == 0.0  # a nudge moves image 0 by a whole step, image 1 not at all
    assert torch.equal(graph.w, torch.eye(2))  # parameters restored
    moved = torch.tensor([[2.0, 3.0], [3.0, 1.0]])  # another runtime rounds image 0 the other way
    assert decision_flips(scores + torch.tensor([[0.0, -1.0], [0.0, 0.0]]), moved.argmax(1), slack) == 0
    assert decision_flips(scores, torch.tensor([0, 1]), slack) == 1  # image 1's flip is beyond its slack
    assert decision_flips(scores + torch.tensor([[0.0, -1.0], [0.0, 0.0]]), moved.argmax(1)) == 1  # no slack: counted
