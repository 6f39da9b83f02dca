"""The Python API: a notebook's path from a preset to metrics, a model and an export."""
import pytest
import torch

import ffhw


def test_config_train_load_and_export(tmp_path):
    cfg = ffhw.make_config("quick", {"train.epochs": 2, "train.lr": 3e-3, "train.lr_schedule": "constant",
                                     "train.batch_size": 50, "model.hidden": [200, 200], "data.train_subset": 1000,
                                     "data.val_size": 500, "data.test_subset": 500})
    assert cfg.model.hidden == [200, 200] and cfg.name == "quick"
    run = ffhw.fit(cfg, out=tmp_path, name="api")
    assert run.summary["status"] == "complete"
    rows = run.rows
    assert {"seed", "epoch", "split", "layer", "metric", "value"} <= set(rows[0])
    acc = [r["value"] for r in rows if r["split"] == "test" and r["metric"] == "acc_head"]
    assert acc and acc[0] > 0.3  # chance 0.1; measured 0.61
    model = ffhw.load_run(tmp_path / "api").model()
    assert model.predict(torch.rand(4, 1, 28, 28)).shape == (1, 4)
    bundle = ffhw.export_bundle(run.path, tmp_path / "export")
    assert (bundle / "manifest.json").is_file()


def test_dataframe_or_a_clear_error(tmp_path):
    cfg = ffhw.make_config(overrides={"train.epochs": 1, "model.hidden": [20], "data.train_subset": 300,
                                      "data.val_size": 200, "data.test_subset": 200})
    run = ffhw.fit(cfg, out=tmp_path, name="df")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ffhw.errors.ConfigError, match="needs pandas"):
            run.dataframe()
    else:
        frame = run.dataframe()
        assert len(frame) == len(run.rows) and set(frame.columns) >= {"metric", "value"}


def test_bad_overrides_are_config_errors():
    from ffhw.errors import ConfigError
    with pytest.raises(ConfigError, match="train.lr = -1"):
        ffhw.make_config("quick", {"train.lr": -1.0})
    with pytest.raises(ConfigError, match="unknown config key"):
        ffhw.make_config("quick", {"train.nope": 1})


def test_run_study_in_process(tmp_path):
    analysis = ffhw.run_study("depth-correlation", grid="tiny", out=tmp_path)
    assert set(analysis["configurations"]) == {"depth-2_width-16", "depth-3_width-16"}
