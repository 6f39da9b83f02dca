import json
import subprocess
import sys
import tomllib

import pytest
import torch

from ffhw import data
from ffhw.records import RunDir, load_model
from ffhw.run import main

TINY = ["--hidden", "2x60", "--epochs", "2", "--train-subset", "600", "--set", "data.val_size=500", "--quiet"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main([*TINY, "--out", str(out), "--name", "r1", "--seeds", "2"]) == 0
    return out / "r1"


def test_run_directory_holds_reusable_records(trained_run):
    cfg = tomllib.loads((trained_run / "config.toml").read_text())
    assert cfg["model"]["hidden"] == [60, 60] and cfg["train"]["seeds"] == 2
    assert cfg["model"]["layer"] == {}  # standard layers have no options
    header = (trained_run / "metrics.csv").read_text().splitlines()[0]
    assert header == "seed,epoch,split,layer,metric,value"
    rows = RunDir(trained_run).read_metrics()
    assert {r["split"] for r in rows} == {"train", "val", "test"} and {r["seed"] for r in rows} == {0, 1}
    assert {r["epoch"] for r in rows if r["split"] == "val"} == {1, 2}
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["status"] == "complete" and "ffhw" in summary["code"]


def test_saved_model_reloads_and_reproduces_test_accuracy(trained_run, mnist_root):
    model, cfg = load_model(trained_run)
    d = data.load("mnist", mnist_root, val_size=500, train_subset=600)
    pred = model.predict(d.test.images(slice(None)))
    acc = (pred == d.test.y).float().mean(-1)
    summary = json.loads((trained_run / "summary.json").read_text())
    for s, seed in enumerate(cfg.train.seed + i for i in range(cfg.train.seeds)):
        assert abs(acc[s].item() - summary["test_acc_goodness"]["per_seed"][str(seed)]) < 1e-6


def test_existing_run_is_never_overwritten(trained_run, capsys):
    before = (trained_run / "metrics.csv").read_bytes()
    assert main([*TINY, "--out", str(trained_run.parent), "--name", "r1"]) == 2
    err = capsys.readouterr().err
    assert "already holds results" in err and "--resume" in err and err.count("\n") == 1
    assert (trained_run / "metrics.csv").read_bytes() == before


def test_resume_refuses_new_settings(trained_run, capsys):
    assert main(["--resume", str(trained_run), "--epochs", "5"]) == 2
    assert "drop --epochs" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--set", "train.nope=1"], "unknown config key 'train.nope'"),
    (["--set", "model.layer_type=analog"], "unknown layer type 'analog'"),
    (["--hidden", "0x5"], "positive layer widths"),
    (["--preset", "missing"], "preset 'missing' not found"),
    (["--set", "model.layer.steps=4"], "unknown option(s) steps for standard layers"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/ffhw-data"], "--data-dir"),
])
def test_bad_input_gives_one_line_error(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    assert main([*TINY, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing half-made left behind


def test_unknown_layer_type_flag_is_refused():
    proc = subprocess.run([sys.executable, "-m", "ffhw.run", "--layer-type", "analog"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'analog'" in proc.stderr


def test_help_lists_flags():
    proc = subprocess.run([sys.executable, "-m", "ffhw.run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in ("--layer-type", "--hidden", "--seeds", "--preset", "--resume", "--data-dir", "--quiet"):
        assert flag in proc.stdout


def test_load_model_uses_weights_only(trained_run, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    load_model(trained_run)
    assert calls == [True]
