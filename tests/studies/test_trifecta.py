"""The Trifecta analysis on synthetic records with known answers."""
from ffhw.studies import trifecta


def cells(acc: dict[str, list[float]], dataset="mnist", blocks=3, flat=False):
    out = []
    for variant, per_seed in acc.items():
        for seed, value in enumerate(per_seed):
            rows = [{"seed": seed, "epoch": 2, "split": "test", "layer": "net", "metric": "acc_goodness", "value": value}]
            rows += [{"seed": seed, "epoch": 2, "split": "test", "layer": str(k), "metric": "layer_acc10",
                      "value": value * (k + 1) / blocks} for k in range(blocks)]
            rows += [{"seed": seed, "epoch": e, "split": "val", "layer": "net", "metric": "acc_goodness",
                      "value": value if flat else value * e / 2} for e in (1, 2)]
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


def test_ordering_steps_are_paired_by_seed_and_decided_by_the_rule():
    seeds = 5
    base = [0.01 * s for s in range(seeds)]  # seeds differ a lot; each variant keeps its seed's offset
    acc = {"vanilla": [0.30 + b for b in base], "symba": [0.55 + b for b in base],
           "symba-apl": [0.61 + b for b in base], "symba-bn": [0.50 + b for b in base], "trifecta": [0.74 + b for b in base]}
    acc["symba-apl"][0] -= 0.003  # noise within a seed, so the paired intervals have width
    checks = trifecta.ordering(trifecta.summarize(cells(acc, flat=True)), PAIRS)
    verdicts = {(c["lower"], c["higher"]): c["verdict"] for c in checks}
    assert verdicts[("symba", "symba-bn")] == "contradicted"
    assert [v for k, v in verdicts.items() if k != ("symba", "symba-bn")] == ["reproduced"] * 4
    two = trifecta.ordering(trifecta.summarize(cells({k: v[:2] for k, v in acc.items()}, flat=True)), PAIRS)
    assert {c["verdict"] for c in two} == {"not testable with this grid"}  # 2 seeds: t has 1 degree of freedom


def test_a_step_between_nets_still_learning_is_not_testable():
    acc = {"symba": [0.5 + 0.01 * s for s in range(5)], "trifecta": [0.7 + 0.01 * s for s in range(5)]}
    (check,) = trifecta.ordering(trifecta.summarize(cells(acc)), [["symba", "trifecta"]])
    assert check["verdict"] == "not testable with this grid" and "still learning" in check["reason"]


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


def test_report_names_what_its_numbers_leave_out():
    from ffhw.study import Study

    study = Study.load("trifecta", "cpu", "standard")  # 5 variants x MNIST, Fashion-MNIST
    results = trifecta.summarize(cells({"vanilla": [0.5, 0.6], "trifecta": [0.7, 0.8], "symba": [0.6]}))
    lines = " ".join(trifecta.missing_lines(study, results))
    assert "cifar10 and svhn not in this grid" in lines
    pending = lines.split("the numbers below: ")[1].split(" (the study")[0].split("; ")
    assert "fashion-mnist trifecta" in pending and "mnist vanilla" not in pending
    assert "mnist symba (1 of 2 seeds finished)" in pending  # a configuration with a seed still to train
    paper = Study.load("trifecta", "paper", "standard")
    assert "not in this grid" not in " ".join(trifecta.missing_lines(paper, results))


def test_steps_whose_cells_have_not_run_are_listed_as_not_run():
    """A grid still being run: every ordering step it holds is listed, the unreached ones as not run, so the
    report's counts are out of the grid's steps, not out of those that happen to have cells."""
    from ffhw.study import Study

    study = Study.load("trifecta", "cpu", "standard")  # 5 variants x MNIST, Fashion-MNIST: 10 steps
    results = trifecta.summarize(cells({"symba-bn": [0.80, 0.81, 0.79, 0.82, 0.80],
                                        "trifecta": [0.85, 0.86, 0.84, 0.86, 0.85]}, flat=True))
    steps = trifecta.with_steps_not_run(study, trifecta.ordering(results, PAIRS))
    assert len(steps) == 10
    assert [s["verdict"] for s in steps].count("not run yet") == 9
    done = next(s for s in steps if "difference" in s)
    assert (done["dataset"], done["lower"], done["higher"], done["verdict"]) == ("mnist", "symba-bn", "trifecta",
                                                                                   "reproduced")


def test_a_variant_keeps_its_colour_whichever_variants_a_report_holds():
    full = trifecta.variant_colors(["vanilla", "symba", "symba-apl", "symba-bn", "trifecta"])
    partial = trifecta.variant_colors(["trifecta", "symba-bn"])
    assert partial["trifecta"] == full["trifecta"] and partial["symba-bn"] == full["symba-bn"]
    assert len(set(full.values())) == 5
    assert trifecta.variant_colors(["no-norm"])["no-norm"] not in full.values()
