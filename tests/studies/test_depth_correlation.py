"""The depth/correlation analysis on synthetic records with known answers."""
import numpy as np

from ffhw.studies import depth_correlation as dc


def synthetic_cells(depth=4, seeds=3, epochs=10, delay=2.0, noise=0.0, rng=None):
    """Layer k's accuracy ramps from 0.5 to 0.95 and crosses 0.7 at epoch 1 + delay * k (on the grid);
    the network's accuracy is layer 0's curve mapped to 10-way accuracy."""
    rng = rng or np.random.default_rng(0)
    cells = []
    for seed in range(seeds):
        rows = []
        for e in range(1, epochs + 1):
            for k in range(depth):
                start = 1 + delay * k  # epoch at which the layer reaches 0.7 exactly
                value = 0.7 + 0.05 * (e - start) if e >= start else 0.5 + 0.01 * e
                value = min(0.95, value) + (rng.normal(0, noise) if noise else 0.0)
                rows.append({"seed": seed, "epoch": e, "split": "val", "layer": str(k), "metric": "layer_acc",
                             "value": value})
            net = 0.1 + 0.08 * e
            rows.append({"seed": seed, "epoch": e, "split": "val", "layer": "net", "metric": "acc_head", "value": net})
        rows.append({"seed": seed, "epoch": epochs, "split": "test", "layer": "net", "metric": "acc_head",
                     "value": 0.9})
        cells.append({"key": f"depth-{depth}_width-100", "factors": {"depth": depth, "width": 100}, "seed": seed,
                      "status": "complete", "rows": rows})
    return cells


def test_planted_delay_gives_known_epoch_to_level_and_slope():
    results = dc.summarize(synthetic_cells(depth=4, delay=2.0), {"bootstrap": 200})
    entry = results["depth-4_width-100"]
    assert np.array_equal(entry["epoch_to_level"][0], [1, 3, 5, 7])
    assert abs(entry["slope"]["slope"] - 2.0) < 1e-9
    assert entry["never_reached"] == 0


def test_layers_that_never_reach_the_level_are_counted():
    results = dc.summarize(synthetic_cells(depth=4, delay=4.0, epochs=10), {"bootstrap": 50})
    entry = results["depth-4_width-100"]  # layer 3 would cross at epoch 13 > 10
    assert entry["never_reached"] == 1 and np.isnan(entry["epoch_to_level"][:, 3]).all()


def test_a_layer_identical_to_the_network_has_r_1():
    cells = synthetic_cells(depth=2, delay=0.0)
    for cell in cells:  # make layer 0 an exact affine copy of the network curve
        net = {r["epoch"]: r["value"] for r in cell["rows"] if r["layer"] == "net" and r["split"] == "val"}
        for r in cell["rows"]:
            if r["layer"] == "0" and r["split"] == "val":
                r["value"] = 0.5 + 0.5 * net[r["epoch"]]
    entry = dc.summarize(cells, {"bootstrap": 50})["depth-2_width-100"]
    first = entry["correlation"]["per_layer"][0]
    assert abs(first["pearson"] - 1) < 1e-9 and abs(first["spearman"] - 1) < 1e-9


def test_claims_read_the_planted_trend():
    results = dc.summarize(synthetic_cells(depth=4, delay=2.0, noise=0.01), {"bootstrap": 200})
    verdicts = {c["claim"].split(" (")[0]: c["verdict"] for c in dc.claims(results)}
    assert verdicts["Deeper layers reach the accuracy level later"] == "reproduced"


def test_figures_and_report_from_records_only(tmp_path):
    """The whole analysis runs on a study directory that holds only records."""
    from ffhw.records import Cell, write_cell
    from ffhw.study import Study
    from ffhw.config import RunConfig, load_toml, find_preset
    import tomli_w

    study = Study(load_toml(find_preset("depth_correlation", "experiments")), "tiny", "standard")
    (tmp_path / "study.toml").write_text(tomli_w.dumps(study.frozen()))
    for cell in synthetic_cells(depth=3, delay=1.0, noise=0.01):
        write_cell(tmp_path, Cell(cell["key"], cell["factors"], cell["seed"]), RunConfig().to_dict(), "complete",
                   cell["rows"], {})
    from ffhw.runner import analyze
    out = analyze(tmp_path, quiet=True)
    for name in ("layer_accuracy", "std_bands", "epoch_to_level", "correlation"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 5000
    report = (tmp_path / "REPORT.md").read_text()
    assert "reduced `tiny` grid" in report and "Deeper layers reach" in report
    assert out["configurations"]["depth-3_width-100"]["slope"]["slope"] > 0


def test_training_batch_accuracy_is_an_analysis_option():
    cells = synthetic_cells(depth=2, delay=1.0)
    for cell in cells:  # training-batch accuracy: higher than held-out
        cell["rows"] += [dict(r, split="train", value=min(0.95, r["value"] + 0.2)) for r in cell["rows"]
                         if r["split"] == "val" and r["layer"] != "net"]
    val = dc.summarize(cells, {"bootstrap": 20})["depth-2_width-100"]["epoch_to_level"]
    train = dc.summarize(cells, {"bootstrap": 20, "layer_split": "train"})["depth-2_width-100"]["epoch_to_level"]
    assert (train <= val).all() and (train < val).any()
