"""NIR graphs of spiking networks for neuromorphic toolchains: `python -m ffhw.export RUN_DIR --nir`
(needs `pip install 'ffhw[nir]'`).

Writes, next to the ONNX bundle, `network.nir` (every layer chained, spikes between them), one
`layer_KK.nir` per layer, and `nir_front.onnx`: the label front (image and label -> layer 0's input, with
its normalisation), which is analog and stays on the host. The graphs are written for a time step DT and
the layer's T steps; the manifest records both, the neuron constants and how the reset is represented
(see ffhw.layers.spiking.nir_neurons). Each file is read back with `nir.read` and run by two consumers on
real test images, compared spike for spike with ffhw's exported layers:

- snnTorch's importer (`snntorch.import_nir.import_from_nir`): reads Affine + LIF (reset to zero); it has
  no leaky integrator or threshold node, so it refuses the subtractive-reset form, and that is recorded;
- nirtorch's graph executor (the NIR project's torch interpreter, which wires the graph and runs its
  recurrent edges with a one-step delay) with the NIR equations under forward Euler at DT (`spec_nodes`).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ExportError

DT = 1e-4  # seconds per step the time constants are written for (snnTorch's importer assumes this one)


def require_nir():
    from importlib.util import find_spec
    if find_spec("nir") is None or find_spec("nirtorch") is None:
        raise ExportError("--nir needs the nir and nirtorch packages: pip install 'ffhw[nir]'")


def nir_parts(model, seed_index: int = 0) -> list:
    """Every layer of one seed as NIR nodes; ExportError (one line) for a network without a NIR form."""
    return [layer.export_nir(seed_index, DT) for layer in model.layers]


def has_nir_form(model, seed_index: int = 0) -> bool:
    """Whether every layer of the network can be written as NIR (spiking FC layers passing spikes)."""
    try:
        nir_parts(model, seed_index)
    except ExportError:
        return False
    return True


def graph_of(parts: list, metadata: dict):
    """Chain layer parts into one graph: input -> layer 0 -> ... -> output; node names `layerK_<name>`."""
    import nir
    nodes, edges, previous = {"input": nir.Input(input_type=np.array(parts[0].in_shape))}, [], "input"
    for k, part in enumerate(parts):
        name = (lambda n, k=k: f"layer{k}_{n}") if len(parts) > 1 else (lambda n: n)
        nodes.update({name(n): node for n, node in part.nodes.items()})
        edges += [(previous, name(part.entry))] + [(name(a), name(b)) for a, b in part.edges]
        previous = name(part.exit)
    nodes["output"] = nir.Output(output_type=np.array(parts[-1].out_shape))
    edges.append((previous, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


# ---- the NIR equations, forward Euler at DT, for nirtorch's executor ----
class Euler(nn.Module):
    """v <- (1 - dt/tau) v + (dt/tau) v_leak + (r dt/tau) I: the NIR leaky integrator, one step."""

    def __init__(self, node):
        super().__init__()
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.decay, self.gain = f32(1 - DT / node.tau), f32(node.r * DT / node.tau)
        self.leak = f32(DT / node.tau * node.v_leak)

    def integrate(self, x, v):
        return self.decay * (torch.zeros_like(x) if v is None else v) + self.leak + self.gain * x


class LI(Euler):
    def forward(self, x, state=None):
        v = self.integrate(x, state)
        return v, v


class LIF(Euler):
    """Fires when v > v_threshold, then resets v to v_reset (NIR's LIF)."""

    def __init__(self, node):
        super().__init__(node)
        self.threshold = torch.as_tensor(node.v_threshold, dtype=torch.float32)
        self.reset = torch.as_tensor(node.v_reset, dtype=torch.float32)

    def forward(self, x, state=None):
        v = self.integrate(x, state)
        spike = (v > self.threshold).float()
        return spike, torch.where(spike > 0, self.reset, v)


class Threshold(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.threshold = torch.as_tensor(node.threshold, dtype=torch.float32)

    def forward(self, x):
        return (x > self.threshold).float()


class Scale(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.scale = torch.as_tensor(node.scale, dtype=torch.float32)

    def forward(self, x):
        return x * self.scale


def dense(node) -> nn.Module:
    out_features, in_features = node.weight.shape
    bias = getattr(node, "bias", None)
    mod = nn.Linear(in_features, out_features, bias=bias is not None)
    with torch.no_grad():
        mod.weight.copy_(torch.as_tensor(node.weight))
        if bias is not None:
            mod.bias.copy_(torch.as_tensor(bias))
    return mod


def conv2d(node) -> nn.Module:
    out_channels, in_channels, kh, kw = node.weight.shape
    mod = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=tuple(np.broadcast_to(node.stride, 2)),
                    padding=tuple(np.broadcast_to(node.padding, 2)), dilation=tuple(np.broadcast_to(node.dilation, 2)),
                    groups=node.groups)
    with torch.no_grad():
        mod.weight.copy_(torch.as_tensor(node.weight))
        mod.bias.copy_(torch.as_tensor(node.bias))
    return mod


def avg_pool2d(node) -> nn.Module:
    return nn.AvgPool2d(tuple(int(k) for k in node.kernel_size), tuple(int(k) for k in node.stride),
                        tuple(int(k) for k in node.padding))


def spec_nodes() -> dict:
    import nir
    return {nir.Affine: dense, nir.Linear: dense, nir.Conv2d: conv2d, nir.AvgPool2d: avg_pool2d, nir.LI: LI,
            nir.LIF: LIF, nir.Threshold: Threshold, nir.Scale: Scale}


@torch.no_grad()
def run_nirtorch(graph, x: torch.Tensor) -> torch.Tensor:
    """Spikes [N, T, U] of `graph` on inputs [N, T, D], stepped by nirtorch's executor with explicit state."""
    import nirtorch
    net, state, out = nirtorch.nir_to_torch(graph, spec_nodes()), None, []
    for t in range(x.shape[1]):
        y, state = net(x[:, t], state)
        out.append(y)
    return torch.stack(out, 1)


@torch.no_grad()
def run_snntorch(graph, x: torch.Tensor) -> torch.Tensor:
    """Spikes [N, T, U] of `graph` imported by snnTorch (its neurons keep their own state)."""
    from snntorch.import_nir import import_from_nir
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints its progress
        net = import_from_nir(graph)
    out = []
    for t in range(x.shape[1]):
        y = net(x[:, t])
        out.append(y[0] if isinstance(y, tuple) else y)
    return torch.stack(out, 1)


CONSUMERS = {"snntorch": run_snntorch, "nirtorch": run_nirtorch}


def compare(graph_path: Path, x: torch.Tensor, reference: torch.Tensor) -> dict:
    """Read the written file back and run it with every consumer: share of differing spikes, or the
    consumer's refusal."""
    import nir
    results = {}
    for name, run in CONSUMERS.items():
        try:
            got = run(nir.read(str(graph_path)), x)
        except Exception as exc:  # a consumer that cannot read a node type says so in its own words
            results[name] = {"ok": None, "refused": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        differ = (got.reshape(reference.shape) != reference).float().mean().item()
        results[name] = {"ok": differ == 0.0, "share_of_differing_spikes": differ}
    return results


class NirFront(nn.Module):
    """Image and label -> what layer 0's NIR graph receives each step (before Bernoulli sampling, if any)."""

    def __init__(self, front: nn.Module, norm: str):
        super().__init__()
        self.front, self.norm = front, norm

    def forward(self, image, label):
        from .layers.ops import normalize
        return normalize(self.front(image, label), self.norm)


def check_front(path: Path, front: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The front file run by onnxruntime against torch: max abs error / max |x| (refused above 1e-5)."""
    from .onnxrt import ort_session
    with torch.no_grad():
        ref = front(images, labels)
    got = torch.from_numpy(ort_session(path).run(None, {"image": images.numpy(), "label": labels.numpy()})[0])
    err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
    if err > 1e-5:
        raise ExportError(f"{path.name}: onnxruntime differs from torch ({err:.3g} of the input range)")
    return err


def export_nir(model, seed_index: int, images: torch.Tensor, labels: torch.Tensor, bundle: Path,
               samples: int = 64) -> dict:
    """Write the NIR files of one seed into `bundle`, check them with every consumer; returns the manifest
    section. Raises ExportError (before writing anything) for a network with no NIR form."""
    import nir
    parts = nir_parts(model, seed_index)
    images, labels = images[:samples], labels[:samples]
    front = model.encoding.export_front(seed_index)
    layer0 = model.layers[0]
    x = front(images, labels)
    inp, feeds, refs = (x if layer0.takes_label_input() else layer0.export_input(x)), [], []
    with torch.no_grad():
        for layer in model.layers:
            feeds.append(layer.nir_input(inp))
            _, inp = layer.export_module(seed_index).eval()(inp)
            refs.append(inp)
    steps = feeds[0].shape[1]
    meta = {"dt": DT, "steps": steps, "producer": "ffhw"}
    entries = []
    for k, (part, feed, ref) in enumerate(zip(parts, feeds, refs)):
        path = bundle / f"layer_{k:02d}.nir"
        nir.write(str(path), graph_of([part], meta))
        entries.append({"file": path.name, "index": k, "input": part.input_encoding, "nodes": sorted(part.nodes),
                        "spike_rate": ref.mean().item(), "consumers": compare(path, feed, ref)})
    nir.write(str(bundle / "network.nir"), graph_of(parts, meta))
    network = compare(bundle / "network.nir", feeds[0], refs[-1])
    front_module = NirFront(front, parts[0].input_norm if parts[0].input_encoding == "repeat" else "none").eval()
    torch.onnx.export(front_module, (images[:2], labels[:2]), str(bundle / "nir_front.onnx"),
                      input_names=["image", "label"], output_names=["x"],
                      dynamic_axes={"image": {0: "batch"}, "label": {0: "batch"}, "x": {0: "batch"}},
                      opset_version=17, dynamo=False)
    front_error = check_front(bundle / "nir_front.onnx", front_module, images, labels)
    failed = [f"{e['file']} ({name})" for e in entries + [{"file": "network.nir", "consumers": network}]
              for name, r in e["consumers"].items() if r["ok"] is False]
    if failed:
        raise ExportError(f"NIR consumers differ from ffhw's spikes in {', '.join(failed)}; the bundle in {bundle} "
                          "is incomplete")
    from importlib.metadata import version
    return {"dt": DT, "steps": steps, "time_constants": "tau = dt / (1 - beta), r = tau / dt (forward Euler)",
            "network": {"file": "network.nir", "consumers": network}, "layers": entries,
            "front": {"file": "nir_front.onnx", "input": parts[0].input_encoding,
                      "note": "image, label -> x [batch, in]: feed x every step (repeat), or spikes drawn with "
                              "probability x each step (bernoulli)", "max_error_onnxruntime": front_error},
            "parity_images": len(labels),
            "versions": {p: version(p) for p in ("nir", "nirtorch", "snntorch")}}
