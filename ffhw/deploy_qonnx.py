"""QONNX files for FINN, executed: `python -m ffhw.export RUN_DIR --qonnx` (needs `pip install ffhw[qonnx]`).

Each quantized layer is exported by Brevitas (`export_qonnx`) at batch 1, passed through qonnx's standard
clean-up (`cleanup_model`: shape inference, constant folding, unique and readable names), saved as
`layer_KK.qonnx.onnx` (what FINN reads), then run by qonnx's own executor (`execute_onnx`, its Python
implementation of the Quant op) on real test inputs and compared with torch in the layer's own units (one
output quantisation step). qonnx's inference-cost analysis (MACs, BOPs, weight bits) is recorded next to
ffhw's cost model. Layer types without a QONNX form write nothing here.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import ExportError

SAMPLES = 32  # executed one by one: qonnx's executor runs node by node in Python


def require_qonnx():
    from importlib.util import find_spec
    if find_spec("qonnx") is None:
        raise ExportError("--qonnx needs the qonnx package: pip install 'ffhw[qonnx]'")


def split_repeated_inputs(model):
    """Give a node that reads one tensor twice (x * x) a copy of it: qonnx's renaming pass renames only the
    first occurrence and leaves the second input dangling."""
    import onnx
    nodes = []
    for node in model.graph.node:
        seen = set()
        for i, name in enumerate(list(node.input)):
            if name and name in seen:
                copy = f"{name}__copy{i}"
                nodes.append(onnx.helper.make_node("Identity", [name], [copy]))
                node.input[i] = copy
            seen.add(name)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def cost_per_sample(path: Path) -> dict:
    """qonnx's inference-cost analysis of a batch-1 model: MACs by operand types, BOPs, weight bits."""
    from qonnx.util.inference_cost import inference_cost
    total = inference_cost(str(path), output_json=None, output_onnx=None, preprocess=True,
                           discount_sparsity=False)["total_cost"]
    return {"macs": total.get("total_macs"), "bops": total.get("total_bops"),
            "weight_bits": total.get("total_mem_w_bits"), "weights": total.get("total_mem_w_elems"),
            "mac_types": {k[len("op_mac_"):]: v for k, v in total.items() if k.startswith("op_mac_")},
            "not_counted": op_names(total.get("unsupported", ""))}


def op_names(text: str) -> list[str]:
    """qonnx reports the ops it does not count as the text of a Python set: "{'Sqrt', 'ReduceL2'}"."""
    import ast
    return [] if text in ("", "set()") else sorted(ast.literal_eval(text))


def write_qonnx(layer, graph, args: tuple, input_names: list[str], path: Path, reference: torch.Tensor,
                seed: int = 0) -> dict:
    """The FINN-ready QONNX file of one layer, executed and compared; returns its manifest fields ({} when the
    layer type has no QONNX form). Raises ExportError when qonnx's result differs from torch's."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model
    from importlib.metadata import version
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        exporter = layer.export_qonnx(graph, tuple(a[:1] for a in args), raw, input_names, ["out", "goodness"], None)
        if exporter is None:
            return {}
        model = cleanup_model(ModelWrapper(split_repeated_inputs(onnx.load(str(raw)))))
    model.save(str(path))
    names, out_name = [i.name for i in model.graph.input], model.graph.output[0].name
    n = min(SAMPLES, len(args[0]))
    got = np.concatenate([execute_onnx(model, {k: a[i:i + 1].numpy() for k, a in zip(names, args)})[out_name]
                          for i in range(n)])
    parity = layer.parity(reference[:n], torch.from_numpy(got).reshape(reference[:n].shape), seed)
    if not parity["ok"]:
        raise ExportError(f"{path.name}: qonnx's executor differs from torch ({parity['metric']} = {parity['value']:.3g}, "
                        f"tolerance {parity['tolerance']})")
    return {"qonnx_file": path.name, "qonnx_exporter": exporter + " + qonnx cleanup_model, batch 1",
            "qonnx_parity": {**parity, "samples": n, "executor": f"qonnx {version('qonnx')} execute_onnx"},
            "qonnx_cost": cost_per_sample(path)}
