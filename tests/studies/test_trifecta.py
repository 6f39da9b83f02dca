"""The Trifecta analysis on synthetic records with known answers."""
from ffhw.studies import trifecta


def cells(acc: dict[str, list[float]], dataset="mnist", blocks=3):
    out = []
    for variant, per_seed in acc.items():
        for seed, value in enumerate(per_seed):
            rows = [{"seed": seed, "epoch": 2, "split": "test", "layer": "net", "metric": "acc_goodness", "value": value}]
            rows += [{"seed": seed, "epoch": 2, "split": "test", "layer": str(k), "metric": "layer_acc10",
                      "value": value * (k + 1) / blocks} for k in range(blocks)]
            rows += [{"seed": seed, "epoch": e, "split": "val", "layer": "net", "metric": "acc_goodness",
                      "value": value * e / 2} for e in (1, 2)]
            out.append({"key": f"variant-{variant}_dataset-{dataset}", "seed": seed, "status": "complete",
                        "factors": {"variant": variant, "data.dataset": dataset}, "rows": rows})
    return out


PAIRS = [["vanilla", "symba"], ["symba", "symba-apl"], ["symba", "symba-bn"], ["symba-apl", "trifecta"],
         ["symba-bn", "trifecta"]]


def test_ablation_means_and_per_block_accuracy():
    results = trifecta.summarize(cells({"vanilla": [0.5, 0.7], "trifecta": [0.9, 0.9]}))
    mean, std, n = results["mnist"]["vanilla"]["test"]
    assert abs(mean - 0.6) < 1e-12 and n == 2 and abs(std - 0.1414213562) < 1e-6
    assert [round(m, 6) for m, _, _ in results["mnist"]["trifecta"]["per_layer"]] == [0.3, 0.6, 0.9]


def test_ordering_check_finds_the_step_that_breaks():
    acc = {"vanilla": [0.30, 0.31], "symba": [0.55, 0.56], "symba-apl": [0.61, 0.62], "symba-bn": [0.50, 0.51],
           "trifecta": [0.74, 0.75]}
    checks = trifecta.ordering(trifecta.summarize(cells(acc)), PAIRS)
    broken = [(c["lower"], c["higher"]) for c in checks if not c["holds"]]
    assert broken == [("symba", "symba-bn")]
    assert all(c["clear"] for c in checks if c["holds"])


def test_a_silent_last_block_makes_a_step_unjudgeable():
    cs = cells({"symba": [0.087, 0.087], "trifecta": [0.5, 0.6]})
    for c in cs:
        if c["factors"]["variant"] == "symba":  # spiking blocks that never fire
            c["rows"] += [{"seed": c["seed"], "epoch": 2, "split": "test", "layer": str(k), "metric": "spike_rate",
                           "value": 0.0 if k == 2 else 0.3} for k in range(3)]
    results = trifecta.summarize(cs)
    assert results["mnist"]["symba"]["silent_blocks"] == [2]
    (check,) = trifecta.ordering(results, [["symba", "trifecta"]])
    assert not check["judged"] and not check["holds"]
