"""The study runner: grids to cells, resume after a kill, retries and failure reports."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import records, run_tiny

from ffhw import runner as study_mod
from ffhw.errors import ConfigError
from ffhw.executors import InProcessExecutor
from ffhw.records import load_cells
from ffhw.runner import StudyRunner
from ffhw.study import Study

REPO = Path(__file__).resolve().parent.parent


def test_grid_expands_to_cells_with_seed_rules():
    paper = Study.load("depth-correlation", "paper", "standard")
    units = paper.units(seed_batch=1)
    assert len(units) == 5 * 2 * 10 + 20  # 10 seeds everywhere, 30 for 32 x 1000
    cfg = paper.config_for({"depth": 32, "width": 1000})
    assert cfg.model.hidden == [1000] * 32 and cfg.data.encoding == "border" and cfg.train.epochs == 100
    spiking = Study.load("depth-correlation", "cpu", "spiking").config_for({"depth": 2, "width": 100})
    assert spiking.model.layer_type == "spiking" and spiking.model.theta == 0.2


def test_full_grid_excludes_combinations_and_nests_the_rest():
    """The depth study's `full` grid: the excluded 16 and 32 x 1000 neither train nor stand in a prefix list,
    width 1000 gets its own seed count, and only the deepest network per width trains."""
    full = Study.load("depth-correlation", "full", "standard")
    assert len(full.all_configurations()) == 5 + 3
    trained = {(f["depth"], f["width"]): f for f in full.configurations()}
    assert set(trained) == {(32, 100), (8, 1000)}
    assert full.config_for(trained[(8, 1000)]).model.prefix_depths == [2, 4]
    assert full.config_for(trained[(32, 100)]).model.prefix_depths == [2, 4, 8, 16]
    assert len(full.seeds_for(trained[(8, 1000)])) == 3 and len(full.seeds_for(trained[(32, 100)])) == 10


def test_trifecta_variants_set_the_three_switches():
    study = Study.load("trifecta", "cpu", "standard")
    cfg = {v: study.config_for({"variant": v, "data.dataset": "mnist"})
           for v in ("vanilla", "symba", "symba-apl", "symba-bn", "trifecta")}
    assert (cfg["vanilla"].model.loss, cfg["vanilla"].model.block_norm, cfg["vanilla"].train.schedule) == \
        ("threshold", "layer", "simultaneous")
    assert (cfg["trifecta"].model.loss, cfg["trifecta"].model.block_norm, cfg["trifecta"].train.schedule) == \
        ("symba", "batch", "apl")
    assert cfg["symba-apl"].train.schedule == "apl" and cfg["symba-bn"].model.block_norm == "batch"
    assert cfg["trifecta"].data.crop_padding == 4 and cfg["trifecta"].data.max_rotation == 15
    factorial = Study.load("trifecta", "factorial", "standard")
    assert len(factorial.configurations()) == 2 * 2 * 2 * 4


def test_every_cell_recorded_and_complete(uninterrupted):
    cells = load_cells(uninterrupted)
    assert len(cells) == 4 and {c["status"] for c in cells} == {"complete"}
    assert {c["seed"] for c in cells} == {0, 1}
    assert all(any(r["split"] == "test" for r in c["rows"]) for c in cells)
    assert all(c["code"]["ffhw"] for c in cells)


def test_a_second_run_skips_finished_cells(uninterrupted):
    before = {p: p.stat().st_mtime_ns for p in uninterrupted.glob("cells/*/metrics.csv")}
    result = run_tiny(uninterrupted)
    assert result["counts"] == {"complete": 4}
    assert before == {p: p.stat().st_mtime_ns for p in uninterrupted.glob("cells/*/metrics.csv")}


def test_kill_then_resume_gives_the_same_records(uninterrupted, tmp_path):
    root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ffhw.run", "study", "depth-correlation", "--grid", "tiny", "--out", str(tmp_path),
           "--name", "killed", "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=os.environ.copy())
    deadline = time.time() + 120
    while time.time() < deadline and not list(root.glob("work/*/checkpoint.pt")):  # mid-unit, after an epoch
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob("work/*/checkpoint.pt")), "the study finished before it could be killed"
    assert len(load_cells(root)) < 4
    subprocess.run(cmd, cwd=REPO, check=True)
    assert records(root) == records(uninterrupted)


class DriverWrites(InProcessExecutor):
    writes_locally = False  # as Ray with --ray-storage driver: the unit returns its rows, the runner writes them


@pytest.mark.parametrize("executor", [InProcessExecutor, DriverWrites])
@pytest.mark.parametrize("stop_in", ["staging", "moving"])
def test_unit_stopped_while_writing_its_cells_never_splits_its_seeds(uninterrupted, tmp_path, monkeypatch,
                                                                     executor, stop_in):
    """A stop while a seed-batched unit writes its cells: stopped while staging, no cell lands and the unit
    trains again whole; stopped while moving, the next run lands the rest without training. Either way the
    records equal an uninterrupted run's (a seed retrained alone would differ in the last bits)."""
    from ffhw import records as records_mod

    name = "write_cell" if stop_in == "staging" else "_move_cell"
    real = getattr(records_mod, name)
    calls = []

    def stops_after_first(*args):
        real(*args)
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt  # escapes the runner as a kill would

    monkeypatch.setattr(records_mod, name, stops_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tmp_path / "s", executor())
    landed = load_cells(tmp_path / "s")
    assert len(landed) == (0 if stop_in == "staging" else 1)
    monkeypatch.setattr(records_mod, name, real)
    trained = []
    real_run = study_mod.run_unit
    monkeypatch.setattr(study_mod, "run_unit", lambda spec: trained.append(spec["seeds"]) or real_run(spec))
    assert run_tiny(tmp_path / "s", executor())["counts"] == {"complete": 4}
    assert trained == [[0, 1], [0, 1]] if stop_in == "staging" else trained == [[0, 1]]
    assert not list((tmp_path / "s").glob("work/*/landing"))
    assert records(tmp_path / "s") == records(uninterrupted)


def test_failing_unit_is_retried_then_reported_without_losing_others(tmp_path, monkeypatch):
    calls = []
    real = study_mod.run_unit

    def flaky(spec):
        calls.append(spec["key"])
        if spec["key"].startswith("depth-3"):
            raise RuntimeError("simulated worker failure")
        return real(spec)

    monkeypatch.setattr(study_mod, "run_unit", flaky)
    result = run_tiny(tmp_path / "s", retries=2)
    assert calls.count("depth-3_width-16") == 3  # first try + 2 retries
    assert result["counts"] == {"complete": 2, "failed": 2}
    failed = [c for c in load_cells(tmp_path / "s") if c["status"] == "failed"]
    assert all("simulated worker failure" in c["error"] for c in failed)
    monkeypatch.setattr(study_mod, "run_unit", real)
    assert run_tiny(tmp_path / "s")["counts"] == {"complete": 4}  # the next invocation retries failed cells


def test_changed_definition_is_refused_on_resume(uninterrupted, tmp_path):
    study = Study.load("depth-correlation", "tiny", "standard", sets=["train.lr=0.01"])
    with pytest.raises(ConfigError, match="started with set"):
        StudyRunner(study, uninterrupted, InProcessExecutor(), quiet=True).run()


def test_a_study_gains_seeds_and_keeps_its_finished_cells_but_cannot_lose_seeds(uninterrupted, tmp_path):
    import copy
    import shutil
    from ffhw.config import load_toml
    root = tmp_path / "grown"
    shutil.copytree(uninterrupted, root)
    before = {p.parent.name: p.stat().st_mtime_ns for p in root.glob("cells/*/metrics.csv")}
    base = Study.load("depth-correlation", "tiny", "standard")
    definition = copy.deepcopy(base.definition)
    definition["grids"]["tiny"]["seeds"] = 3
    grown = Study(definition, "tiny", "standard", source=base.source)
    result = StudyRunner(grown, root, InProcessExecutor(), quiet=True).run()
    assert result["counts"] == {"complete": 6}
    assert {c["seed"] for c in load_cells(root)} == {0, 1, 2}
    assert before == {name: t for name, t in ((p.parent.name, p.stat().st_mtime_ns)
                                               for p in root.glob("cells/*/metrics.csv")) if name in before}
    assert load_toml(root / "study.toml")["definition"]["grids"]["tiny"]["seeds"] == 3
    with pytest.raises(ConfigError, match="changed since"):  # back to 2 seeds would hide seed 2's cells
        StudyRunner(base, root, InProcessExecutor(), quiet=True).run()


def test_unknown_grid_and_study_are_one_line_errors():
    with pytest.raises(ConfigError, match="no grid 'huge'"):
        Study.load("depth-correlation", "huge", "standard")
    with pytest.raises(ConfigError, match="not found"):
        Study.load("no-such-study", "cpu", "standard")


def test_report_from_records_only(uninterrupted):
    from ffhw.runner import analyze
    out = analyze(uninterrupted, quiet=True)
    assert (uninterrupted / "REPORT.md").exists() and (uninterrupted / "figures" / "correlation.png").exists()
    assert set(out["configurations"]) == {"depth-2_width-16", "depth-3_width-16"}


def test_seed_batch_rule_bounds_step_memory_on_the_cpu():
    from ffhw.config import RunConfig
    from ffhw.device import SEED_BATCH_BYTES_CPU
    from ffhw.study import choose_seed_batch

    def cfg(layer_type, width, **layer):
        c = RunConfig()
        c.model.layer_type, c.model.hidden, c.model.layer = layer_type, [width] * 4, layer
        c.train.batch_size, c.train.device = 100, "cpu"
        return c

    assert choose_seed_batch(cfg("standard", 100), 30) == 30
    assert choose_seed_batch(cfg("standard", 1000), 30) == 30  # 30 x 200 x 1000 floats = 24 MB
    spiking = choose_seed_batch(cfg("spiking", 1000, steps=8), 30)  # 6.4 MB per seed
    assert spiking == SEED_BATCH_BYTES_CPU // (200 * 1000 * 8 * 4) == 10
    assert choose_seed_batch(cfg("quantized", 1000), 30) == SEED_BATCH_BYTES_CPU // (200 * 1000 * 16 * 4) == 5
    assert choose_seed_batch(cfg("quantized", 300), 30) == 17
    conv = cfg("standard", 100)
    conv.model.architecture = "small"
    assert choose_seed_batch(conv, 30) == 1


def test_a_gpu_cell_on_an_executor_without_gpu_shares_is_refused():
    from ffhw.errors import ConfigError
    from ffhw.study import Study
    study = Study.load("depth-correlation", "tiny", "standard", ["train.device=cuda"])
    with pytest.raises(ConfigError, match="--gpus-per-cell"):
        study.units(device_type="cpu")  # what Ray gives a task with no GPU share
    assert study.units(device_type="cuda")  # with a GPU share


def test_a_damaged_cell_record_gives_one_line(uninterrupted, tmp_path, capsys):
    import shutil
    from ffhw.run import main
    root = tmp_path / "copy"
    shutil.copytree(uninterrupted, root)
    cell = sorted((root / "cells").glob("*/cell.json"))[0]
    cell.write_text("{not json")
    assert main(["study", "--report", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(cell) in err and "delete that cell's folder" in err and err.count("\n") == 1


def test_a_change_to_another_layer_types_table_leaves_a_study_directory_valid():
    """What a grid's cells of one layer type train: another type's [layer_types.*] table is not part of it."""
    import copy
    from ffhw.config import find_preset, load_toml
    from ffhw.study import _grid_part
    definition = load_toml(find_preset("depth_correlation", "experiments"))
    changed = copy.deepcopy(definition)
    changed.setdefault("layer_types", {}).setdefault("spiking", {}).setdefault("train", {})["lr"] = 0.5
    assert _grid_part(changed, "cpu", "standard") == _grid_part(definition, "cpu", "standard")
    assert _grid_part(changed, "cpu", "spiking") != _grid_part(definition, "cpu", "spiking")
    changed["grids"]["cpu"]["note"] = "rewritten after the cells ran"
    assert _grid_part(changed, "cpu", "standard") == _grid_part(definition, "cpu", "standard")
    changed["grids"]["cpu"]["seeds"] = 7
    assert _grid_part(changed, "cpu", "standard") != _grid_part(definition, "cpu", "standard")


def test_a_second_runner_on_the_same_study_directory_is_refused(uninterrupted):
    lock = uninterrupted / "work" / "runner.lock"
    lock.parent.mkdir(exist_ok=True)
    import socket
    lock.write_text(f"{os.getpid()} {socket.gethostname()}")  # a live runner holds it
    try:
        with pytest.raises(ConfigError, match="is being run by process"):
            run_tiny(uninterrupted)
    finally:
        lock.unlink()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{gone.stdout.strip()} {socket.gethostname()}")  # its runner died: taken over, then released
    assert run_tiny(uninterrupted)["counts"] == {"complete": 4} and not lock.exists()


def test_only_runs_the_selected_cells_and_a_later_run_finishes_the_rest(uninterrupted, tmp_path):
    root = tmp_path / "part"
    result = run_tiny(root, only={"depth": ["3"]})
    assert {c["factors"]["depth"] for c in load_cells(root)} == {3} and result["counts"] == {"complete": 2}
    run_tiny(root)  # no filter: the pending depth-2 cells, the finished ones untouched
    assert records(root) == records(uninterrupted)


def test_only_with_an_unknown_factor_or_value_is_a_one_line_error(tmp_path, capsys):
    from ffhw.run import main as study_mod_main
    base = ["study", "depth-correlation", "--grid", "tiny", "--out", str(tmp_path), "--quiet"]
    assert study_mod_main(base + ["--only", "depth=7"]) == 2
    assert "its values are 2, 3" in capsys.readouterr().err
    assert study_mod_main(base + ["--only", "lr=1"]) == 2
    assert "factors are depth, width" in capsys.readouterr().err
    assert study_mod_main(base + ["--only", "depth"]) == 2
    assert not list(tmp_path.glob("*/cells/*"))
    with pytest.raises(ConfigError, match="selects none of the configurations this grid trains"):
        Study.load("depth-correlation", "full", "standard").check_only({"depth": ["2"]})  # nested: 2 is a prefix
