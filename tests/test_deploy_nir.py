"""NIR export of spiking networks (ffhw/deploy_nir.py), read back by NIR consumers on real test images."""
import pytest
import torch

from ffhw.errors import ExportError
from ffhw.export import export_run, verify_bundle
from ffhw.run import main

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

SPIKING = ["--layer-type", "spiking", "--theta", "0.2", "--set", "model.layer.steps=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("nir-runs")
    variants = {"subtract": [], "zero": ["--set", "model.layer.reset=zero"], "standard": None}
    for name, extra in variants.items():
        flags = ["--layer-type", "standard"] if extra is None else SPIKING + extra
        argv = ["--hidden", "64,48,32", "--epochs", "1", "--train-subset", "1000", "--set", "data.val_size=200",
                "--optimizer", "adam", "--lr", "3e-3", "--quiet", "--out", str(out), "--name", name, *flags]
        assert main(argv) == 0
    return out


def spikes_of(bundle, manifest):
    """The reference spike rate of the bundle's layers, from the ONNX files' own parity inputs."""
    return [e["spike_rate"] for e in manifest["nir"]["layers"]]


def test_zero_reset_network_round_trips_through_snntorch_and_nirtorch(runs, tmp_path):
    bundle = export_run(runs / "zero", tmp_path, nir=True, log=lambda *a: None)
    manifest = verify_bundle(bundle)
    section = manifest["nir"]
    assert {"network.nir", "layer_00.nir", "layer_02.nir", "nir_front.onnx"} <= set(manifest["files"])
    assert section["steps"] == 4 and section["dt"] > 0 and section["parity_images"] == 64
    for entry in section["layers"] + [section["network"]]:
        for consumer in ("snntorch", "nirtorch"):
            assert entry["consumers"][consumer] == {"ok": True, "share_of_differing_spikes": 0.0}
    # the comparison is not vacuous: every layer fires on the parity images
    assert all(0.01 < rate < 0.99 for rate in spikes_of(bundle, manifest))
    graph = nir.read(str(bundle / "network.nir"))
    assert sum(isinstance(n, nir.LIF) for n in graph.nodes.values()) == 3
    lif = graph.nodes["layer0_lif"]
    beta = 1 - section["dt"] / lif.tau  # the time constant written for the layer's beta
    assert beta == pytest.approx(0.5) and (lif.v_reset == 0).all()


def test_subtract_reset_is_written_as_its_definition_and_checked(runs, tmp_path):
    bundle = export_run(runs / "subtract", tmp_path, nir=True, log=lambda *a: None)
    section = verify_bundle(bundle)["nir"]
    graph = nir.read(str(bundle / "layer_01.nir"))
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds == {"input": "Input", "affine": "Affine", "li": "LI", "spike": "Threshold", "reset": "Scale",
                     "output": "Output"}
    assert ("reset", "li") in graph.edges and (graph.nodes["reset"].scale == -1.0).all()  # -threshold
    for entry in section["layers"] + [section["network"]]:
        assert entry["consumers"]["nirtorch"]["ok"] is True
        assert entry["consumers"]["snntorch"]["ok"] is None  # its importer has no LI node: refused, recorded
        assert "LI" in entry["consumers"]["snntorch"]["refused"]


def test_the_check_tells_a_wrong_reset_apart(runs, tmp_path):
    """A subtract-reset layer written as NIR's LIF (reset to zero) gives other spikes: the check sees it."""
    from ffhw.deploy_nir import DT, compare, graph_of
    from ffhw.model import load_model
    from ffhw.layers.base import NirPart
    model, cfg = load_model(runs / "subtract")
    layer = model.layers[1]
    part = layer.export_nir(0, DT)
    tau = part.nodes["li"].tau
    wrong = NirPart({"affine": part.nodes["affine"],
                     "lif": nir.LIF(tau=tau, r=tau / DT, v_leak=0 * tau, v_threshold=1 + 0 * tau, v_reset=0 * tau)},
                    [("affine", "lif")], "affine", "lif", part.in_shape, part.out_shape)
    x = (torch.rand(64, 4, layer.in_features, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    _, reference = layer.export_module(0).eval()(x)
    path = tmp_path / "wrong.nir"
    nir.write(str(path), graph_of([wrong], {}))
    assert compare(path, x, reference)["nirtorch"]["share_of_differing_spikes"] > 0.001
    nir.write(str(path), graph_of([part], {}))
    assert compare(path, x, reference)["nirtorch"]["ok"] is True


def test_networks_without_a_nir_form_are_refused_before_anything_is_written(runs, tmp_path, capsys):
    assert main(["export", str(runs / "standard"), "--out", str(tmp_path), "--nir"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: standard layers have no NIR form") and "\n" not in err
    assert not (tmp_path / "standard").exists()


def test_spiking_conv_network_round_trips_through_snntorch_and_nirtorch(tmp_path):
    """A trained spiking conv network (batch norm folded into the conv, current average-pooled before the
    neurons, reset to zero) as NIR Conv2d -> AvgPool2d -> LIF: both consumers give its spikes exactly."""
    conv = ["--set", "model.architecture=small", "--set", "model.width_scale=0.0625", "--set", "data.encoding=channel",
            "--set", "model.goodness=mean", "--set", "model.loss=symba", "--set", "model.peer_norm=0",
            "--set", "model.classifier_layers=last", "--set", "train.head=false", "--set", "model.layer.reset=zero"]
    # batch 32: enough steps for batch norm's running statistics (which evaluation folds in) to settle
    argv = ["--epochs", "1", "--train-subset", "960", "--batch-size", "32", "--set", "data.val_size=200", "--set", "data.test_subset=200",
            "--optimizer", "adam", "--lr", "3e-3", "--quiet", "--out", str(tmp_path), "--name", "conv", *SPIKING, *conv]
    assert main(argv) == 0
    bundle = export_run(tmp_path / "conv", tmp_path / "export", nir=True, parity_samples=32, accuracy_samples=100,
                        log=lambda *a: None)
    section = verify_bundle(bundle)["nir"]
    graph = nir.read(str(bundle / "network.nir"))
    assert {type(n).__name__ for n in graph.nodes.values()} >= {"Conv2d", "AvgPool2d", "LIF"}
    for entry in section["layers"] + [section["network"]]:
        for consumer in ("snntorch", "nirtorch"):
            assert entry["consumers"][consumer] == {"ok": True, "share_of_differing_spikes": 0.0}, entry
    assert all(0.01 < e["spike_rate"] < 0.99 for e in section["layers"]), [e["spike_rate"] for e in section["layers"]]


def test_spiking_conv_blocks_without_a_nir_form_refuse_in_one_line(mnist_conv):
    from conftest import conv_config
    from ffhw.model import FFNet
    for options, norm, says in (({"conv_pool": "spikes"}, "batch", "NIR has no max-pool of spikes.*conv_pool = current"),
                                ({}, "layer", "layer norm needs each sample's statistics")):
        model = FFNet(conv_config("spiking", {"steps": 2, **options}, block_norm=norm), mnist_conv.image_shape, 10)
        pooling = next(layer for layer in model.layers if layer.pool)
        with pytest.raises(ExportError, match=says) as err:
            pooling.export_nir(0, 1e-4)
        assert "\n" not in str(err.value)