"""Per-layer ONNX export: `python -m ffhw.export RUN_DIR` (or `python -m ffhw.run export RUN_DIR`).

Writes `export/<run-name>/` (see export/README.md): one standalone model per trained layer, a whole-network
`classifier.onnx` and `manifest.json`. Every export is checked at once against torch on real test inputs
(per layer with the layer type's own parity rule; the classifier by its decisions: at most 0.05% of the
test images decided differently beyond rounding ties) and fails loudly. The layer types bring their own export module, exporter and parity rule; nothing here asks
which type a layer is.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .onnxrt import ort_session, unshare_integer_constants

OPSET = 17
ACCURACY_TOLERANCE = 0.0005  # 0.05% of the test images may be decided differently
TIE_TOLERANCE = 1e-4  # scores this close (relative to the largest |score| of the image) count as tied
NUDGE = 1e-6  # relative nudge of every parameter, float32 rounding of a sum: how far rounding can move scores


def decision_flips(reference_scores: torch.Tensor, predictions: torch.Tensor, slack: torch.Tensor | None = None) -> int:
    """Images [N] whose predicted class scores clearly below the reference's best: by more than a float tie
    and more than twice the image's rounding slack [N] (see rounding_slack)."""
    best = reference_scores.max(1).values
    chosen = reference_scores.gather(1, predictions[:, None])[:, 0]
    tie = TIE_TOLERANCE * reference_scores.abs().amax(1).clamp_min(1e-12)
    if slack is not None:
        tie = torch.maximum(tie, 2 * slack)
    return int(((best - chosen) > tie).sum())


def rounding_slack(graph: nn.Module, images: torch.Tensor, scores: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """Per image [N]: how far its class scores move when every parameter of `graph` is nudged by NUDGE
    (random sign per element, then the opposite sign). Quantizers and spike thresholds turn values that sit
    on a rounding boundary into whole steps; another runtime's summation order may round those the other
    way, so a decision within this slack is a rounding tie, not an export error."""
    params = list(graph.parameters())
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(0)
    signs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
    slack = torch.zeros(len(images))
    try:
        with torch.no_grad():
            for direction in (1.0, -1.0):
                for p, s, sign in zip(params, saved, signs):
                    p.copy_(s * (1 + direction * NUDGE * sign))
                moved = torch.cat([graph(images[i:i + chunk]) for i in range(0, len(images), chunk)])
                slack = torch.maximum(slack, (moved - scores).abs().amax(1))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return slack


BUNDLE_VERSION = 1


def goodness(act: torch.Tensor, kind: str) -> torch.Tensor:
    sq = act.reshape(act.shape[0], -1).square()
    return sq.sum(1) if kind == "sum" else sq.mean(1)


class LayerGraph(nn.Module):
    """One layer as deployed: its input (layer 0: image and label) -> (output, goodness)."""

    def __init__(self, core: nn.Module, goodness_kind: str, front: nn.Module | None = None):
        super().__init__()
        self.core, self.kind, self.front = core, goodness_kind, front

    def forward(self, *inputs):
        x = self.front(*inputs) if self.front is not None else inputs[0]
        act, out = self.core(x)
        return out, goodness(act, self.kind)


class ClassifierGraph(nn.Module):
    """Image [N, *shape] -> class scores [N, C]: summed goodness of the classifier layers for every label,
    or the linear head's logits on the neutral label."""

    def __init__(self, front: nn.Module, cores: list[nn.Module], goodness_kind: str, classifier_layers: list[int],
                 head: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.front, self.cores, self.kind = front, nn.ModuleList(cores), goodness_kind
        self.classifier_layers = classifier_layers
        self.use_head = head is not None
        if head is not None:
            self.head = nn.Linear(head[0].shape[0], head[0].shape[1])
            with torch.no_grad():
                self.head.weight.copy_(head[0].t())
                self.head.bias.copy_(head[1].reshape(-1))

    def forward(self, image):
        n, c = image.shape[0], self.front.num_classes
        if self.use_head:
            inp, feats = self.front.neutral(image), []
            for k, core in enumerate(self.cores):
                act, inp = core(inp)
                if k in self.classifier_layers:
                    a = act.reshape(n, -1)
                    feats.append(a / (a.square().mean(1, keepdim=True).sqrt() + 1e-8))
            return self.head(torch.cat(feats, 1))
        inp = self.front.all_labels(image)
        scores = torch.zeros(n, c)
        for k, core in enumerate(self.cores):
            act, inp = core(inp)
            if k in self.classifier_layers:
                scores = scores + goodness(act, self.kind).reshape(n, c)
        return scores


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def optimized_ops(path: Path) -> dict[str, int]:
    """Op histogram of the graph onnxruntime actually runs (after its optimisations)."""
    import tempfile

    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        ort_session(path, optimized_path=opt_path)
        graph = onnx.load(str(opt_path)).graph
    return dict(Counter(node.op_type for node in graph.node))


INTEGER_OPS = ("QGemm", "QLinearMatMul", "MatMulInteger", "QLinearConv", "ConvInteger", "DynamicQuantizeMatMul")


def export_run(run_dir: str | Path, out_root: str | Path = "export", seed_index: int = 0,
               classifier: str = "goodness", parity_samples: int = 512, name: str | None = None,
               qonnx: bool = False, accuracy_samples: int | None = None, log=print, nir: bool = False) -> Path:
    """Export every layer of a trained run and its classifier; check parity; write the manifest. `qonnx`
    adds executed QONNX files (deploy_qonnx), `nir` NIR graphs checked by NIR consumers (deploy_nir)."""
    from .data import load as load_data
    from .config import safe_component
    from .files import make_dir
    from .model import load_model

    run_dir = Path(run_dir)
    model, cfg = load_model(run_dir)
    if not 0 <= seed_index < model.seeds:
        raise ExportError(f"--seed-index {seed_index} is out of range: the run has {model.seeds} seed(s)")
    if qonnx:
        from .deploy_qonnx import require_qonnx
        require_qonnx()
    if nir:  # refuse a network without a NIR form before anything is written
        from .deploy_nir import nir_parts, require_nir
        require_nir()
        nir_parts(model, seed_index)
    bundle = Path(out_root) / safe_component(name or run_dir.resolve().name, "bundle name (--name)")
    if bundle.is_dir() and any(bundle.iterdir()):
        raise ExportError(f"{bundle} already holds a bundle; remove it or pass --name")
    make_dir(bundle, "bundle folder")
    d = load_data(cfg.data.dataset, cfg.data.data_dir or None, "cpu", cfg.data.val_size, cfg.data.train_subset)
    images, labels = d.test.images(slice(0, parity_samples)), d.test.y[:parity_samples]
    front = model.encoding.export_front(seed_index)
    layers, cores = export_layers(model, seed_index, cfg.model.goodness, images, labels, bundle, qonnx, log)
    if not model.layers[0].takes_label_input():
        raise ExportError("classifier.onnx needs direct input encoding; rate-encoded networks export per layer only")
    head = (model.head_weight[seed_index].detach(), model.head_bias[seed_index].detach()) if classifier == "head" else None
    graph = ClassifierGraph(front, cores, cfg.model.goodness, model.classifier_layers, head).eval()
    test_x, test_y = d.test.images(slice(0, accuracy_samples)), d.test.y[:accuracy_samples]  # default: all
    classifier_entry = export_classifier(model, graph, classifier, seed_index, images, test_x, test_y, bundle)
    log(f"classifier.onnx: test accuracy onnxruntime {classifier_entry['test_accuracy_onnxruntime']:.4f}, "
        f"torch {classifier_entry['test_accuracy_torch']:.4f}")
    files = [e["file"] for e in layers] + [e["qonnx_file"] for e in layers if "qonnx_file" in e] + ["classifier.onnx"]
    nir_section = None
    if nir:
        from .deploy_nir import export_nir
        nir_section = export_nir(model, seed_index, images, labels, bundle)
        files += [e["file"] for e in nir_section["layers"]] + ["network.nir", "nir_front.onnx"]
        log("NIR: " + "; ".join(f"{name} {describe_consumer(r)}" for name, r in nir_section["network"]["consumers"].items()))
    manifest = {
        "bundle_version": BUNDLE_VERSION, "run": str(run_dir), "run_name": run_dir.name,
        "layer_type": cfg.model.layer_type, "seed": model.seed_list[seed_index], "dataset": d.name,
        "image_shape": list(d.image_shape), "num_classes": d.num_classes, "label_encoding": cfg.data.encoding,
        "goodness": cfg.model.goodness, "norm": cfg.model.norm, "classifier": classifier,
        "classifier_layers": model.classifier_layers, "opset": OPSET, "layers": layers,
        "classifier_model": {**classifier_entry, "inputs": {"image": ["batch", *d.image_shape]},
                             "outputs": {"scores": ["batch", d.num_classes]}},
        "files": {f: {"bytes": (bundle / f).stat().st_size, "sha256": sha256(bundle / f)} for f in files},
        "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if nir_section:
        manifest["nir"] = nir_section
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return bundle


def describe_consumer(result: dict) -> str:
    if result["ok"] is None:
        return f"refused ({result['refused']})"
    return f"{result['share_of_differing_spikes']:.3g} of spikes differ"


def export_layers(model, seed_index: int, goodness_kind: str, images: torch.Tensor, labels: torch.Tensor,
                  bundle: Path, qonnx: bool = False, log=print) -> tuple[list[dict], list[nn.Module]]:
    """Every layer of one seed as its own checked ONNX file, each fed the torch output of the layer below
    (layer 0: the parity images and labels, or what its type says a deployment feeds it). Returns the
    manifest entries and the exported cores."""
    front = model.encoding.export_front(seed_index)
    entries, cores, inp = [], [], None
    for k, layer in enumerate(model.layers):
        core = layer.export_module(seed_index).eval()
        cores.append(core)
        with_label = k == 0 and layer.takes_label_input()
        graph = LayerGraph(core, goodness_kind, front if with_label else None).eval()
        if k == 0:
            args = (images, labels) if with_label else (layer.export_input(front(images, labels)),)
        else:
            args = (inp,)
        entry, inp = export_layer(layer, k, graph, args, ["image", "label"] if with_label else ["x"], bundle, qonnx,
                                  seed_index)
        entry["threshold"] = model.objectives[k].threshold
        entries.append(entry)
        log(f"layer {k}: {entry['file']} {(bundle / entry['file']).stat().st_size:,} bytes, parity "
            f"{entry['parity']['metric']} = {entry['parity']['value']:.3g}"
            + (f"; {entry['qonnx_file']}: qonnx executor {entry['qonnx_parity']['value']:.3g}" if "qonnx_file" in entry else ""))
    return entries, cores


def export_layer(layer, k: int, graph: nn.Module, args: tuple, input_names: list[str], bundle: Path,
                 qonnx: bool, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """One layer's ONNX file, checked against torch with onnxruntime in the layer's own units; returns its
    manifest entry and the layer's torch output (the next layer's input)."""
    dynamic = {n: {0: "batch"} for n in (*input_names, "out", "goodness")}
    path = bundle / f"layer_{k:02d}.onnx"
    with torch.no_grad():
        ref_out, ref_good = graph(*args)
    exporter = layer.export_onnx(graph, args, path, input_names, ["out", "goodness"], dynamic, OPSET)
    unshare_integer_constants(path)
    got_out, got_good = ort_session(path).run(None, {n: a.numpy() for n, a in zip(input_names, args)})
    parity = layer.parity(ref_out, torch.from_numpy(got_out), seed)
    parity["goodness_rel_error"] = float(np.max(np.abs(got_good - ref_good.numpy())) / (np.abs(ref_good.numpy()).max() + 1e-12))
    ops = optimized_ops(path)
    entry = {"file": path.name, "index": k, "inputs": {n: [("batch" if i == 0 else s) for i, s in enumerate(a.shape)]
                                                       for n, a in zip(input_names, args)},
             "input_dtypes": {n: str(a.dtype).replace("torch.", "") for n, a in zip(input_names, args)},
             "outputs": {"out": ["batch", *ref_out.shape[1:]], "goodness": ["batch"]},
             "in_features": layer.in_features, "out_features": layer.out_features, "exporter": exporter,
             "parity": parity, "optimized_ops": ops, **layer.export_meta()}
    if not parity["ok"]:
        raise ExportError(f"{path.name}: onnxruntime differs from torch ({parity['metric']} = {parity['value']:.3g}, "
                          f"tolerance {parity['tolerance']}); the bundle in {bundle} is incomplete")
    if layer.weight_bits() < 32 and not any(op in ops for op in INTEGER_OPS):
        raise ExportError(f"{path.name}: onnxruntime did not fuse the quantized layer into integer kernels "
                          f"(optimised ops: {', '.join(sorted(ops))})")
    if qonnx:  # for FINN: run by qonnx's own executor and compared, like the ONNX file above
        from .deploy_qonnx import write_qonnx
        entry.update(write_qonnx(layer, graph, args, input_names, path.with_name(f"layer_{k:02d}.qonnx.onnx"), ref_out,
                                 seed))
    return entry, ref_out


def export_classifier(model, graph: nn.Module, classifier: str, seed_index: int, example: torch.Tensor,
                      test_x: torch.Tensor, test_y: torch.Tensor, bundle: Path) -> dict:
    """classifier.onnx (image -> class scores), checked on the test images: decisions must agree with torch
    and with the trained model except where scores are tied to float rounding or a rounding boundary."""
    path = bundle / "classifier.onnx"
    exporter = model.layers[0].export_onnx(graph, (example[:2],), path, ["image"], ["scores"],
                                           {"image": {0: "batch"}, "scores": {0: "batch"}}, OPSET)
    unshare_integer_constants(path)
    sess = ort_session(path)
    graph_scores, ort_scores, model_scores = [], [], []
    with torch.no_grad():
        for start in range(0, len(test_y), 1000):
            xb = test_x[start:start + 1000]
            graph_scores.append(graph(xb))
            ort_scores.append(torch.from_numpy(sess.run(None, {"image": xb.numpy()})[0]))
            model_scores.append(model.class_scores(xb, classifier)[seed_index])
    graph_scores, ort_scores, model_scores = torch.cat(graph_scores), torch.cat(ort_scores), torch.cat(model_scores)
    torch_acc, ort_acc, model_acc = ((sc.argmax(1) == test_y).float().mean().item()
                                     for sc in (graph_scores, ort_scores, model_scores))
    # a near-chance network has many ties, and two summation orders break them differently
    slack = rounding_slack(graph, test_x, graph_scores)
    flips = max(decision_flips(graph_scores, ort_scores.argmax(1), slack),
                decision_flips(model_scores, graph_scores.argmax(1), slack))
    if flips > ACCURACY_TOLERANCE * len(test_y):
        raise ExportError(f"classifier.onnx decides {flips} of {len(test_y)} test images differently beyond float ties "
                          f"(accuracy onnxruntime {ort_acc:.4f}, torch {torch_acc:.4f}, trained model {model_acc:.4f}; "
                          f"more than 0.05%); the bundle in {bundle} is incomplete")
    return {"file": "classifier.onnx", "exporter": exporter, "test_accuracy_onnxruntime": ort_acc,
            "test_accuracy_torch": torch_acc, "test_accuracy_trained_model": model_acc, "test_images": len(test_y),
            "decisions_differing_beyond_ties": flips,
            "images_with_rounding_slack": int((slack > TIE_TOLERANCE * graph_scores.abs().amax(1).clamp_min(1e-12)).sum()),
            "optimized_ops": optimized_ops(path)}


def _versions() -> dict:
    import onnx
    import onnxruntime
    from .files import code_version
    return {**code_version(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "platform": platform.platform()}


def verify_bundle(bundle: str | Path) -> dict:
    """Check a bundle before use: manifest present, every file there with its recorded sha256, inputs as
    recorded. Returns the manifest; raises ExportError with what is wrong."""
    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not path.is_file():
        raise ExportError(f"{bundle} is not an ffhw export bundle (no manifest.json); create one with python -m ffhw.export RUN_DIR")
    from .files import read_json
    manifest = read_json(path, "re-export the bundle (python -m ffhw.export RUN_DIR)")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise ExportError(f"{path}: bundle version {manifest.get('bundle_version')} is not {BUNDLE_VERSION}; re-export it")
    for name, info in manifest.get("files", {}).items():
        f = bundle / name
        if not f.is_file():
            raise ExportError(f"{bundle}: {name} listed in the manifest is missing; re-export the bundle")
        if sha256(f) != info["sha256"]:
            raise ExportError(f"{bundle}: {name} does not match its sha256 in the manifest (modified or corrupt); re-export the bundle")
    for entry in manifest["layers"]:
        sess = ort_session(bundle / entry["file"])
        actual = {i.name: [d if isinstance(d, int) else "batch" for d in i.shape] for i in sess.get_inputs()}
        if actual != entry["inputs"]:
            raise ExportError(f"{bundle}: {entry['file']} inputs {actual} do not match the manifest {entry['inputs']}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ffhw.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run directory (holds model.pt)")
    p.add_argument("--out", default="export", help="parent folder of bundles (default export/)")
    p.add_argument("--name", help="bundle folder name (default: the run directory's name)")
    p.add_argument("--seed-index", type=int, default=0, help="which of the run's seeds to export (default 0)")
    from .model import CLASSIFIERS
    p.add_argument("--classifier", choices=CLASSIFIERS, default="goodness",
                   help="classifier.onnx: summed goodness over labels (default) or the linear head")
    p.add_argument("--qonnx", action="store_true",
                   help="also write QONNX files (for FINN) of quantized layers, run by qonnx's executor (ffhw[qonnx])")
    p.add_argument("--nir", action="store_true",
                   help="also write NIR graphs of a spiking network, checked by NIR consumers (ffhw[nir])")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    bundle = export_run(args.run_dir, args.out, args.seed_index, args.classifier, name=args.name, qonnx=args.qonnx,
                        nir=args.nir)
    print(f"bundle written to {bundle}")
    return 0


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main, sys.argv[1:]))
