"""The console output: one per-layer table per epoch, from the same metric rows as metrics.csv."""
from rich.console import Console

from ffhw.ui import ConsoleUI


def rows_of(split: str, metric: str, values: list[float]) -> list[dict]:
    return [{"seed": 0, "epoch": 1, "split": split, "layer": str(k), "metric": metric, "value": v}
            for k, v in enumerate(values)]


def printed(rows: list[dict]) -> str:
    console = Console(width=200, record=True, force_terminal=False)
    ui = ConsoleUI(console)
    ui.start(epochs=2, batches=3, start_epoch=0)
    ui.epoch(1, rows, 12.3, 4.5)
    ui.close()
    return console.export_text()


def test_epoch_table_shows_validation_layers():
    rows = rows_of("val", "layer_acc", [0.91, 0.82]) + rows_of("train", "loss", [0.5, 0.6])
    rows.append({"seed": 0, "epoch": 1, "split": "val", "layer": "net", "metric": "acc_head", "value": 0.97})
    text = printed(rows)
    assert "epoch 1: val acc (head) 0.9700 (train 12.3 s, eval 4.5 s)" in text and "[val split]" in text
    assert "0.910" in text and "0.820" in text and "train loss" in text


def test_without_validation_the_table_shows_the_training_batches():
    # a run with data.val_size = 0 used to print an empty table whose title wrapped into a column 9 characters wide
    rows = rows_of("train", "layer_acc", [0.76, 0.71]) + rows_of("train", "loss", [32.6, 130.5])
    rows.append({"seed": 0, "epoch": 1, "split": "train", "layer": "net", "metric": "head_acc", "value": 0.772})
    rows.append({"seed": 0, "epoch": 1, "split": "train", "layer": "net", "metric": "epoch_seconds", "value": 12.3})
    text = printed(rows)
    assert "epoch 1: train acc (head, running) 0.7720 (train 12.3 s, eval 4.5 s)" in text and "[train split]" in text
    assert "0.760" in text and "130.5" in text


def test_without_any_layer_metrics_the_epoch_is_one_line():
    rows = [{"seed": 0, "epoch": 1, "split": "train", "layer": "net", "metric": "epoch_seconds", "value": 12.3}]
    text = printed(rows)
    assert "epoch 1: (train 12.3 s, eval 4.5 s)" in text and "layer" not in text
