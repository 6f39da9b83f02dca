"""What a run measures: per-step sums on the device, evaluation of a split, tidy rows, the divergence check
and the run summary. Values stay device tensors until an epoch ends; `rows` reads them once per metric.

Rows are the records' unit (see records.py): seed, epoch, split, layer ("0".. or "net"), metric, value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .device import eval_batch_bytes
from .errors import DivergenceError

LAYER_METRICS = ("loss", "layer_acc", "g_pos", "g_neg")  # accumulated per layer over training batches
TIMING_METRICS = ("epoch_seconds", "eval_seconds")  # wall-clock measurements: differ between identical runs


# ---------------------------------------------------------------------------------------------- training sums
def training_sums(n_layers: int, seeds: int, device) -> dict[str, torch.Tensor]:
    """Zeroed per-epoch sums: each layer metric [L, S] (sample-weighted), samples seen per layer, head [S]."""
    sums = {name: torch.zeros(n_layers, seeds, device=device) for name in (*LAYER_METRICS, "seen")}
    sums["head_loss"] = torch.zeros(seeds, device=device)
    sums["head_acc"] = torch.zeros(seeds, device=device)
    return sums


@torch.no_grad()
def add_layer_step(sums: dict, k: int, objective, loss: torch.Tensor, g_pos: torch.Tensor, g_neg: torch.Tensor) -> None:
    """Add one batch of layer k ([S] loss, [S, B] goodness of positives and negatives) to the sums."""
    b = g_pos.shape[-1]
    sums["loss"][k] += loss * b
    sums["layer_acc"][k] += objective.binary_accuracy(g_pos, g_neg) * b
    sums["g_pos"][k] += g_pos.mean(-1) * b
    sums["g_neg"][k] += g_neg.mean(-1) * b
    sums["seen"][k] += b


@torch.no_grad()
def add_head_step(sums: dict, logits: torch.Tensor, ce: torch.Tensor, labels: torch.Tensor) -> None:
    sums["head_loss"] += ce.sum(-1)
    sums["head_acc"] += (logits.argmax(-1) == labels).float().sum(-1)


def training_metrics(sums: dict, layers: range, train_size: int, head: bool) -> dict[str, torch.Tensor]:
    """Epoch means of the training sums: per trained layer [len(layers), S] and, with a head, network [S]."""
    trained = slice(layers.start, layers.stop)
    seen = sums["seen"][trained].clamp(min=1)
    metrics = {f"layer/{k}": sums[k][trained] / seen for k in LAYER_METRICS}
    if head:
        metrics |= {"net/head_loss": sums["head_loss"] / train_size, "net/head_acc": sums["head_acc"] / train_size}
    return metrics


def non_finite(sums: dict, layers: range, seeds: list[int]) -> dict | None:
    """The first non-finite loss or goodness of the epoch, or None (one host sync per epoch)."""
    for metric in ("loss", "g_pos", "g_neg", "head_loss"):
        values = sums[metric] if metric == "head_loss" else sums[metric][layers.start:layers.stop]
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            index = bad[0].tolist()
            layer = "net" if metric == "head_loss" else str(layers[index[0]])
            return {"metric": metric, "layer": layer, "seed": seeds[index[-1]]}
    return None


def divergence(bad: dict, epoch: int, where: str) -> DivergenceError:
    return DivergenceError(
        f"training diverged in epoch {epoch} (non-finite {bad['metric']} in layer {bad['layer']}, seed {bad['seed']}); "
        f"records up to it are kept{where}; lower --lr or change the loss/threshold")


# ---------------------------------------------------------------------------------------------- evaluation
def eval_images_per_batch(model, num_classes: int, cap: int, device: torch.device) -> int:
    """Images per evaluation batch: `cap` (train.eval_batch_size), lowered until the widest layer's
    activities for all seeds and labels fit in what the device allows (`device.eval_batch_bytes`)."""
    widest = max(layer.units for layer in model.layers)
    per_image = model.seeds * num_classes * widest * 4
    return max(1, min(cap, eval_batch_bytes(device) // per_image))


@torch.no_grad()
def classifier_goodness(model, split, batch: int) -> torch.Tensor:
    """Goodness of the classifier layers for every label, [S, N, C] (for hard negatives)."""
    model.eval()
    parts = []
    for start in range(0, len(split), batch):
        g, _, _ = model.evaluate_batch(split.images(slice(start, start + batch)), with_head=False)
        parts.append(g[model.classifier_slice].sum(0))
    model.train()
    return torch.cat(parts, dim=1)


@torch.no_grad()
def evaluate_split(model, split, negatives: torch.Tensor, batch: int, head: bool) -> dict[str, torch.Tensor]:
    """Per-layer [L, S] and network [S] metrics of a split: layer accuracies (binary against one fixed wrong
    label per sample, and C-way), loss, goodness of positives and negatives, hardware statistics, and each
    classifier's accuracy."""
    model.eval()
    n_layers, s, device = len(model.layers), model.seeds, negatives.device
    zeros = lambda: torch.zeros(n_layers, s, device=device)  # noqa: E731
    sums = {"loss": zeros(), "layer_acc": zeros(), "layer_acc10": zeros(), "g_pos": zeros(), "g_neg": zeros()}
    net = {"acc_goodness": torch.zeros(s, device=device), "acc_head": torch.zeros(s, device=device)}
    for d in model.prefix_depths:  # the nested depth design's shallower networks
        net[f"acc_goodness@{d}"] = torch.zeros(s, device=device)
        if head:
            net[f"acc_head@{d}"] = torch.zeros(s, device=device)
    stat_sums: list[dict[str, torch.Tensor]] = [{} for _ in range(n_layers)]
    unit_counts: list = [0] * n_layers  # [S, U] rows each unit was active in
    for start in range(0, len(split), batch):
        sl = slice(start, start + batch)
        images, y, yn = split.images(sl), split.y[sl], negatives[sl]
        n = len(y)
        goodness, logits, stats, prefix_logits = model.evaluate_batch(images, with_head=head, prefixes=True)
        idx_pos = y.view(1, 1, n, 1).expand(n_layers, s, n, 1)
        idx_neg = yn.view(1, 1, n, 1).expand(n_layers, s, n, 1)
        g_pos, g_neg = goodness.gather(-1, idx_pos)[..., 0], goodness.gather(-1, idx_neg)[..., 0]
        for k, obj in enumerate(model.objectives):
            sums["loss"][k] += obj.loss(g_pos[k], g_neg[k]) * n
            sums["layer_acc"][k] += obj.binary_accuracy(g_pos[k], g_neg[k]) * n
            unit_counts[k] = unit_counts[k] + stats[k].pop("unit_activity")
            for key, value in stats[k].items():
                stat_sums[k][key] = stat_sums[k].get(key, 0) + value * n
        sums["layer_acc10"] += (goodness.argmax(-1) == y).float().sum(-1)
        sums["g_pos"] += g_pos.sum(-1)
        sums["g_neg"] += g_neg.sum(-1)
        net["acc_goodness"] += (goodness[model.classifier_slice].sum(0).argmax(-1) == y).float().sum(-1)
        if logits is not None:
            net["acc_head"] += (logits.argmax(-1) == y).float().sum(-1)
        for d, layers in model.prefix_classifiers.items():
            net[f"acc_goodness@{d}"] += (goodness[layers[0]:layers[-1] + 1].sum(0).argmax(-1) == y).float().sum(-1)
            if d in prefix_logits:
                net[f"acc_head@{d}"] += (prefix_logits[d].argmax(-1) == y).float().sum(-1)
    model.train()
    total = len(split)
    result = {f"layer/{k}": v / total for k, v in sums.items()}
    for key in stat_sums[0]:
        result[f"layer/{key}"] = torch.stack([st[key] for st in stat_sums]) / total
    rows_seen = total * model.num_classes  # every label of every sample
    result["layer/dead_units"] = torch.stack([(c == 0).float().mean(-1) for c in unit_counts])
    result["layer/always_on_units"] = torch.stack([(c == rows_seen).float().mean(-1) for c in unit_counts])
    static = [layer.static_stats() for layer in model.layers]
    for key in static[0]:
        result[f"layer/{key}"] = torch.stack([torch.as_tensor(st[key], dtype=torch.float32, device=device).expand(s)
                                              for st in static])
    result.update({f"net/{key}": value / total for key, value in net.items() if head or "head" not in key})
    return result


# A layer is flagged when this share of its units never fires (silent) or fires for every input, whatever the
# label (saturated: it cannot tell positives from negatives); reported per seed, from the validation split.
HEALTH_LIMIT = 0.9


def layer_health(metrics: dict[str, torch.Tensor], seeds: list[int]) -> list[dict]:
    """Silent and saturated layers of an evaluation ([L, S] dead and always-on unit shares): one entry per
    layer and condition, with the seeds it holds for."""
    found = []
    for condition, key in (("silent", "layer/dead_units"), ("saturated", "layer/always_on_units")):
        if key not in metrics:
            continue
        for k, shares in enumerate(metrics[key].detach().cpu().tolist()):
            hit = [sd for sd, share in zip(seeds, shares) if share >= HEALTH_LIMIT]
            if hit:
                found.append({"layer": k, "condition": condition, "seeds": hit, "share": max(shares)})
    return found


def health_message(entry: dict, epoch: int) -> str:
    what = "never fire" if entry["condition"] == "silent" else "fire for every input (whatever the label)"
    return (f"layer {entry['layer']} is {entry['condition']} after epoch {epoch}: {entry['share']:.0%} of its units "
            f"{what} (seeds {', '.join(map(str, entry['seeds']))})")


def head_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of seed-batched logits [S, B, C] against labels [S, B] -> [S, B]."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)


# ---------------------------------------------------------------------------------------------- rows
def metric_rows(seeds: list[int], epoch: int, split: str, metrics: dict[str, torch.Tensor],
         layer_names: list[str] | None = None) -> list[dict]:
    """Tidy rows of metrics keyed "layer/<metric>" ([L, S]) or "net/<metric>" ([S]); `layer_names` names
    the L rows of layer metrics (default "0".."L-1")."""
    out = []
    for key, value in metrics.items():
        scope, metric = key.split("/")
        values = value.detach().float().cpu().tolist()  # one transfer per metric
        if scope == "layer":
            names = layer_names or [str(k) for k in range(len(values))]
            for name, per_seed in zip(names, values):
                out += [dict(seed=sd, epoch=epoch, split=split, layer=name, metric=metric, value=v)
                        for sd, v in zip(seeds, per_seed)]
        else:
            out += [dict(seed=sd, epoch=epoch, split=split, layer="net", metric=metric, value=v)
                    for sd, v in zip(seeds, values)]
    return out


def total_train_seconds(rows_so_far: list[dict], seed: int) -> float:
    """Training time of every epoch recorded (those before a resume included)."""
    return sum(r["value"] for r in rows_so_far if r["metric"] == "epoch_seconds" and r["seed"] == seed)


def final_summary(rows_so_far: list[dict], split: str, metric: str) -> dict | None:
    """A network metric of a split per seed, with its mean and std over seeds (None if absent)."""
    vals = {r["seed"]: r["value"] for r in rows_so_far if r["split"] == split and r["layer"] == "net" and r["metric"] == metric}
    if not vals:
        return None
    v = torch.tensor(list(vals.values()), dtype=torch.float64)
    return {"per_seed": vals, "mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0}


def run_summary(rows_so_far: list[dict], model, cfg, dataset: str, device, compiled: bool, epoch: int, status: str,
            extra: dict) -> dict:
    out = {"status": status, "epochs_completed": epoch, "epochs": cfg.train.epochs,
           "layer_type": cfg.model.layer_type, "dataset": dataset, "device": str(device), "compiled": compiled,
           "seeds": model.seed_list, "parameters_per_seed": sum(layer.parameters_per_seed() for layer in model.layers),
           "deployed_weight_bytes_per_seed": sum(layer.deployed_weight_bytes() for layer in model.layers)}
    for metric in ("acc_goodness", "acc_head"):
        value = final_summary(rows_so_far, "test", metric)
        if value is not None:
            out[f"test_{metric}"] = value
    out.update(extra)
    return out
