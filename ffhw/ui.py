"""Terminal output with rich: progress bars (epochs and batches, ETA, latest accuracies), a per-layer table
after every epoch, and a final summary. All of it reads the same metric rows that go to metrics.csv."""
from __future__ import annotations

from collections import defaultdict
from statistics import mean

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

LAYER_COLUMNS = (("layer_acc", "pos/neg acc", "{:.3f}"), ("layer_acc10", "10-way acc", "{:.3f}"),
                 ("loss", "loss", "{:.4g}"), ("g_pos", "good+", "{:.3g}"), ("g_neg", "good-", "{:.3g}"),
                 ("sparsity", "sparsity", "{:.2f}"), ("spike_rate", "spikes", "{:.3f}"),
                 ("weight_levels", "w levels", "{:.0f}"), ("dead_units", "dead", "{:.2f}"),
                 ("always_on_units", "always on", "{:.2f}"))


def seed_means(rows: list[dict]) -> dict[tuple[str, str, str], float]:
    """(split, layer, metric) -> mean over seeds."""
    acc = defaultdict(list)
    for r in rows:
        acc[(r["split"], r["layer"], r["metric"])].append(r["value"])
    return {k: mean(v) for k, v in acc.items()}


def layer_table(rows: list[dict], split: str, title: str) -> Group:
    m = seed_means(rows)
    layers = sorted({k[1] for k in m if k[0] == split and k[1] != "net"}, key=int)
    columns = [c for c in LAYER_COLUMNS if any((split, layer, c[0]) in m for layer in layers)]
    train_loss = any(("train", layer, "loss") in m for layer in layers) and split != "train"
    table = Table()
    table.add_column("layer", justify="right")
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    if train_loss:
        table.add_column("train loss", justify="right")
    for layer in layers:
        cells = [layer] + [fmt.format(m[(split, layer, key)]) if (split, layer, key) in m else "-"
                           for key, _, fmt in columns]
        if train_loss:
            cells.append(f"{m[('train', layer, 'loss')]:.4f}" if ("train", layer, "loss") in m else "-")
        table.add_row(*cells)
    return Group(Text(f"{title} [{split} split]"), table)  # the title above, not in the table: a narrow table wraps it


class ConsoleUI:
    def __init__(self, console: Console | None = None, title: str = ""):
        self.console = console or Console()
        self.title = title
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console)

    def start(self, epochs: int, batches: int, start_epoch: int) -> None:
        if self.title:
            self.console.print(self.title)
        self.progress.start()
        self.epochs_task = self.progress.add_task("epochs", total=epochs, completed=start_epoch, info="")
        self.batch_task = self.progress.add_task("batches", total=batches, info="")

    def batch(self) -> None:
        self.progress.advance(self.batch_task)

    def epoch(self, epoch: int, rows: list[dict], epoch_seconds: float, eval_seconds: float) -> None:
        m = seed_means(rows)
        parts = [f"{label} {m[('val', 'net', key)]:.4f}" for key, label in
                 (("acc_goodness", "val acc (goodness)"), ("acc_head", "val acc (head)")) if ("val", "net", key) in m]
        if not parts and ("train", "net", "head_acc") in m:  # no validation split: the epoch's running accuracy
            parts = [f"train acc (head, running) {m[('train', 'net', 'head_acc')]:.4f}"]
        info = " | ".join(parts)
        self.progress.update(self.epochs_task, advance=1, info=info)
        self.progress.reset(self.batch_task)
        line = f"epoch {epoch}: {info + ' ' if info else ''}(train {epoch_seconds:.1f} s, eval {eval_seconds:.1f} s)"
        # a run without validation images shows the training batches' running metrics instead of an empty table
        split = next((s for s in ("val", "train") if any(k[0] == s and k[1] != "net" for k in m)), None)
        self.progress.console.print(line)  # on its own line: a table's title wraps to the table's width
        if split:
            self.progress.console.print(layer_table(rows, split, "per layer (mean over seeds)"))

    def warn(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning: {message}")

    def done(self, summary: dict, test_rows: list[dict]) -> None:
        self.progress.stop()
        self.console.print(layer_table(test_rows, "test", "test set, per layer (mean over seeds)"))
        for key, label in (("test_acc_goodness", "goodness classifier"), ("test_acc_head", "linear head")):
            if key in summary:
                v = summary[key]
                spread = f" +/- {v['std']:.4f}" if len(v["per_seed"]) > 1 else ""
                self.console.print(f"test accuracy, {label}: [bold]{v['mean']:.4f}[/bold]{spread}")
        self.console.print(f"training time {summary.get('train_seconds', 0):.1f} s, "
                           f"{summary['parameters_per_seed']:,} parameters per network")

    def close(self) -> None:
        self.progress.stop()
