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
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
