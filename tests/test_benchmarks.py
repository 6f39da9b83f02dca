"""The benchmarks' instruments: products captured from a real step and replayed alone, and a results file that keeps
the sections a run did not measure."""
import json
import sys
from pathlib import Path

import torch
from conftest import small_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_tools import MatmulReplay, capture_products, step_runner, strided_randn, textbook_gemms  # noqa: E402
from train_bench_report import write_result  # noqa: E402


def test_strided_operands_keep_their_layout():
    t = strided_randn((3, 4, 5), (0, 5, 1), torch.float32)  # one matrix expanded over a batch of 3
    assert t.shape == (3, 4, 5) and t.stride() == (0, 5, 1) and torch.equal(t[0], t[2])
    assert strided_randn((2, 3), (1, 2), torch.bfloat16).dtype == torch.bfloat16


def test_a_step_is_captured_and_replayed_with_its_flops(mnist_small):
    cfg = small_config(hidden=(64, 32))
    cfg.train.compile = "off"
    calls = capture_products(step_runner(cfg, mnist_small, warmup=1))
    replay = MatmulReplay(calls)
    replay()
    assert calls, "a training step runs matrix products"
    b = cfg.train.batch_size
    # whatever the implementation saves, a step projects each image once in layer 0 and runs layer 1 on
    # positives and negatives
    assert replay.flops >= 2.0 * b * 784 * 64 + 2.0 * (2 * b) * 64 * 32
    textbook = MatmulReplay.textbook(textbook_gemms(cfg, 784, b))
    textbook()
    per_layer = [(2 * b * i * o) * 2 + (i * 2 * b * o) * 2 + (b * i * o * 2 if cfg.train.head else 0)
                 for i, o in zip((784, 64), (64, 32))]
    assert textbook.flops == sum(per_layer)


def test_results_file_keeps_sections_not_run_with_their_provenance(tmp_path):
    out = tmp_path / "bench.json"
    old_made = {"code": {"commit": "aaa"}, "command": "old"}
    out.write_text(json.dumps({"quick": {"epochs": 3}, "old_layout_key": 1,
                               "seed_batching": [{"layer_type": "spiking", "seeds": 10}],
                               "provenance": {"quick": old_made, "seed_batching": old_made}}))
    new = {"code": {"commit": "bbb"}, "command": "new", "machine": {}, "training": [{"config": "x"}],
           "seed_batching": [{"layer_type": "standard", "seeds": 10}]}
    write_result(out, new)
    got = json.loads(out.read_text())
    assert got["quick"] == {"epochs": 3} and got["provenance"]["quick"] == old_made
    assert got["provenance"]["training"]["code"] == {"commit": "bbb"} and "old_layout_key" not in got
    kept, fresh = got["seed_batching"]
    assert kept["layer_type"] == "spiking" and kept["provenance"] == old_made and fresh["layer_type"] == "standard"
