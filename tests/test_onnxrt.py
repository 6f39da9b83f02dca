"""onnxruntime sessions: integer graphs load and compute exactly on every x86 CPU."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ffhw.onnxrt import ort_session, unshare_integer_constants


def shared_zero_point_graph(path):
    """x -> two int8 QDQ matmuls whose weights share one zero-point initializer (as torch's exporter writes)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (64, 32), dtype=np.int8), f"w{i}") for i in range(2)]
    inits += [numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(np.array(0.02, np.float32), "s"),
              numpy_helper.from_array(np.array(128, np.uint8), "xzp"), numpy_helper.from_array(np.array(1 / 255, np.float32), "xs")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"])]
    for i in range(2):
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}", "s", "zp"], [f"wd{i}"]),
                  helper.make_node("MatMul", ["xd", f"wd{i}"], [f"y{i}"])]
    nodes.append(helper.make_node("Add", ["y0", "y1"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return sum(numpy_helper.to_array(i).astype(np.int64) for i in inits[:2])


def test_unshared_integer_graph_loads_and_matches_exact_integer_arithmetic(tmp_path):
    path = tmp_path / "m.onnx"
    weights = shared_zero_point_graph(path)
    unshare_integer_constants(path)
    model = onnx.load(str(path))
    uses = [name for node in model.graph.node for name in node.input]
    integer = [i.name for i in model.graph.initializer if i.data_type in (TensorProto.INT8, TensorProto.UINT8)]
    assert all(uses.count(name) == 1 for name in integer)  # every node its own zero point
    assert uses.count("zp") == 1 and sum(u.startswith("zp") for u in uses) == 2
    x = np.random.default_rng(1).random((16, 64), dtype=np.float32)
    got = ort_session(path).run(None, {"x": x})[0]
    xq = np.clip(np.round(x * 255) + 128, 0, 255).astype(np.int64) - 128  # what QuantizeLinear feeds the kernel
    exact = (xq @ weights) * (0.02 / 255)
    assert np.abs(got - exact).max() <= 1e-4 * np.abs(exact).max()
