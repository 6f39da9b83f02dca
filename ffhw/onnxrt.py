"""onnxruntime sessions as every export check and benchmark opens them (CPU, all graph optimisations)."""
from __future__ import annotations

from pathlib import Path


def ort_session(path: Path, threads: int = 0, optimized_path: Path | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    opts.log_severity_level = 3
    # x86 CPUs without VNNI multiply uint8 x int8 through 16-bit sums that saturate; this makes onnxruntime
    # use exact uint8 x uint8 kernels there instead (no effect on VNNI or ARM CPUs).
    opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def unshare_integer_constants(path: Path) -> None:
    """Give every node its own copy of each integer initializer it shares (the exporter merges equal zero
    points): onnxruntime's exact integer path on x86 CPUs without VNNI rewrites zero points one node at a
    time and refuses to load a graph whose nodes share one."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    graph = model.graph
    integer = {i.name: i for i in graph.initializer if i.data_type in (TensorProto.INT8, TensorProto.UINT8)}
    seen: dict[str, int] = {}
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name not in integer:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                copy = TensorProto()
                copy.CopyFrom(integer[name])
                copy.name = f"{name}_use{seen[name]}"
                graph.initializer.append(copy)
                node.input[j] = copy.name
    if any(count > 1 for count in seen.values()):
        onnx.save(model, str(path))
