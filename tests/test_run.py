import json
import os
import subprocess
import sys
import tomllib

import pytest
import torch

from ffhw import data
from ffhw.model import load_model
from ffhw.records import RunDir
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
    # every class of bad value: non-finite, out of range, wrong type, a layer option, a combination, a path
    (["--lr", "nan"], "train.lr = nan must be a finite number"),
    (["--theta", "inf"], "model.theta = inf must be a finite number"),
    (["--set", "train.momentum=1.5"], "train.momentum = 1.5 is out of range"),
    (["--batch-size", "0"], "train.batch_size = 0 is out of range"),
    (["--train-subset", "-5"], "data.train_subset = -5 is out of range"),
    (["--set", "train.weight_decay=-1e-3"], "train.weight_decay = -0.001 is out of range"),
    (["--set", "train.seeds=two"], "train.seeds = 'two' is not a valid int"),
    (["--layer-type", "quantized", "--set", "model.layer.weight_bits=9"], "weight_bits = 9"),
    (["--layer-type", "spiking", "--set", "model.layer.beta=nan"], "model.layer.beta = nan"),
    (["--schedule", "greedy", "--epochs", "1"], "leaves some of the 2 layers untrained"),
    (["--set", "train.autocast=fp16", "--seeds", "2"], "use train.autocast = bf16"),
    (["--name", "../../escaped"], "--name '../../escaped' must be one directory name"),
    (["--name", "a/b"], "must be one directory name"),
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


def test_output_location_that_is_a_file_or_unwritable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main([*TINY, "--out", str(blocker), "--name", "r"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a file" in err and err.count("\n") == 1
    assert blocker.read_text() == "not a directory"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        assert main([*TINY, "--out", str(locked / "sub"), "--name", "r"]) == 2
        assert "cannot be created" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


@pytest.fixture
def run_copy(trained_run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.mark.parametrize("damage,argv,message", [
    ("config.toml", lambda r: ["--resume", str(r)], "config.toml: invalid TOML"),
    ("checkpoint.pt", lambda r: ["--resume", str(r)], "checkpoint.pt cannot be read"),
    ("metrics.csv", lambda r: ["--resume", str(r)], "metrics.csv is not a metrics file"),
    ("model.pt", lambda r: ["export", str(r), "--out", str(r.parent / "bundles")], "model.pt cannot be read"),
])
def test_a_damaged_file_gives_one_line_naming_it(run_copy, damage, argv, message, capsys):
    import shutil
    if damage == "checkpoint.pt":  # a finished run keeps no checkpoint: make one from its model
        shutil.copy(run_copy / "model.pt", run_copy / "checkpoint.pt")
    (run_copy / damage).write_bytes(b"\x00garbage[[\n")
    others = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.name != damage}
    assert main(argv(run_copy)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and str(run_copy) in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.name != damage} == others  # nothing lost


def test_a_preset_with_a_bad_value_names_the_file(tmp_path, capsys):
    preset = tmp_path / "mine.toml"
    preset.write_text("[train]\nlr = -1.0\n")
    assert main([*TINY, "--out", str(tmp_path / "runs"), "--preset", str(preset)]) == 2
    err = capsys.readouterr().err
    assert str(preset) in err and "train.lr = -1.0 is out of range" in err and err.count("\n") == 1


def test_resume_on_another_device_type_warns_and_is_recorded(run_copy, capsys, monkeypatch):
    """Random streams differ between device types: the resumed run cannot equal an uninterrupted one."""
    state = torch.load(run_copy / "model.pt", weights_only=True)
    from ffhw.config import RunConfig
    from ffhw.model import FFNet
    from ffhw.train import Trainer
    cfg = RunConfig.from_dict(state["config"]).validate()
    d = data.load("mnist", None, val_size=500, train_subset=600)
    model = FFNet(cfg, d.image_shape, 10)
    model.load_state_dict(state["state_dict"])
    checkpoint = Trainer(cfg, d, model, torch.device("cpu")).state_dict(1)
    checkpoint["device"] = "cuda"  # as if checkpointed on a GPU
    torch.save(checkpoint, run_copy / "checkpoint.pt")
    assert main(["--resume", str(run_copy), "--quiet"]) == 0
    assert "checkpointed on cuda and continues on cpu" in capsys.readouterr().err
    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["resumed_on_other_device"] == {"checkpoint": "cuda", "resumed": "cpu"}
