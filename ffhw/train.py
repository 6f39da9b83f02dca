"""The training loop: plain, visible, the same for every layer type.

Each step: draw a batch per seed -> layer 0 on the images with their true labels (positives), wrong labels
(negatives) and, for the head, the neutral label (each image projected once where the layer type allows it)
-> the deeper layers, each on its detached input -> per-layer goodness loss (+ peer normalisation) -> one backward over
the sum of local losses (no gradient crosses a layer) -> each layer's optimiser steps. The linear head
trains beside them on the detached neutral-label activities.

Randomness is derived from (seed, epoch, stream), never carried as state: data order, negatives and any
in-layer sampling of an epoch depend only on those, so a resumed run replays exactly what an
uninterrupted one would have done. Metrics are accumulated as device tensors and read once per epoch.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .config import RunConfig
from .data import Data, Split
from .augment import Augment
from .device import clock, configure_compile, eval_batch_bytes, make_optimizer, set_deterministic, tune_runtime, use_compile
from .encode import hard_negatives, random_negatives
from .errors import DivergenceError
from .layers import LayerOutput
from .model import FFNet, derive_seed, device_generator, seed_generators
from .objectives import peer_loss, peer_update
from .records import RunDir

LAYER_METRICS = ("loss", "layer_acc", "g_pos", "g_neg")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for a 0-based epoch."""
    if schedule == "cooldown":  # loeweX: constant for the first half, then linearly down towards zero
        return min(1.0, 2.0 * (epochs - epoch) / epochs)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return 1.0


class Trainer:
    def __init__(self, cfg: RunConfig, data: Data, model: FFNet, device: torch.device,
                 run: RunDir | None = None, ui=None):
        self.cfg, self.data, self.model, self.device, self.run = cfg, data, model, device, run
        tune_runtime(device)
        set_deterministic(cfg.train.deterministic, device)
        self.ui = ui
        t = cfg.train
        self.layer_opts = [make_optimizer(self.optimized_parameters(k), t.optimizer, t.lr, t.weight_decay, t.momentum)
                           for k in range(len(model.layers))]
        self.augment = Augment(cfg.data.crop_padding, cfg.data.max_rotation, data.image_shape)
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.autocast)
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.autocast == "fp16")
        self.head_opt = make_optimizer(model.head_parameters(), t.optimizer, t.head_lr, t.head_weight_decay, t.momentum)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
        # Compiled: the elementwise work of each layer (normalisation, activation, goodness, loss and their
        # gradients) fuses into a few kernels; shapes are static (one recompile for a short last batch).
        self.compiled = use_compile(cfg, model, device, len(data.train))
        self.step_losses, self.step_head_loss = self.layer_losses, self.head_loss
        if self.compiled:
            configure_compile(t.compile, variants=2 * (len(model.layers) + 2))
            self.step_losses = torch.compile(self.layer_losses, dynamic=False)
            self.step_head_loss = torch.compile(self.head_loss, dynamic=False)
        model.fuse_evaluation(self.compiled)
        self.rows: list[dict] = []
        self.start_epoch = 0
        self.resumed_from: str | None = None  # device type of the checkpoint a resumed run continues
        self._eval_negatives: dict[str, torch.Tensor] = {}

    def optimized_parameters(self, k: int) -> list:
        """What layer k's optimiser updates: its own parameters (layer 0: with the label encoding's), and
        under the APL schedule also layer k-1's, which its loss reaches through the attached pair."""
        params = list(self.model.layer_parameters(k))
        if self.cfg.train.schedule == "apl" and k > 0:
            params += list(self.model.layer_parameters(k - 1))  # layer 0's with the label encoding's
        return params

    def computes_loss(self, k: int, step: int) -> bool:
        """APL: on even batches blocks 1, 3, 5.. compute a loss (pairs (0,1), (2,3)..), on odd batches
        blocks 0, 2, 4.. (pairs (1,2), (3,4).. with block 0 alone); other schedules: every trained layer."""
        if self.cfg.train.schedule != "apl":
            return True
        return (k % 2 == 1) == (step % 2 == 0)

    # ---- state ----
    def state_dict(self, epoch: int) -> dict:
        return {"epoch": epoch, "device": self.device.type, "model": self.model.state_dict(),
                "scaler": self.scaler.state_dict(),
                "layer_opts": [o.state_dict() for o in self.layer_opts], "head_opt": self.head_opt.state_dict()}

    def load_state_dict(self, state: dict, rows: list[dict]) -> None:
        self.model.load_state_dict(state["model"])
        for opt, sd in zip(self.layer_opts, state["layer_opts"]):
            opt.load_state_dict(sd)
        self.head_opt.load_state_dict(state["head_opt"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.resumed_from = state.get("device", "cpu")
        self.rows = [r for r in rows if r["epoch"] <= self.start_epoch and r["split"] != "test"]

    # ---- schedule ----
    def trained_layers(self, epoch: int) -> range:
        """Layers that learn in this epoch: all (simultaneous), or one after another (greedy, equal shares)."""
        n = len(self.model.layers)
        if self.cfg.train.schedule == "greedy":
            k = min(epoch * n // self.cfg.train.epochs, n - 1)
            return range(k, k + 1)
        return range(n)

    def set_lr(self, epoch: int) -> None:
        t = self.cfg.train
        f = lr_factor(t.lr_schedule, epoch, t.epochs)
        for opt in self.layer_opts:
            for group in opt.param_groups:
                group["lr"] = t.lr * f
        for group in self.head_opt.param_groups:
            group["lr"] = t.head_lr * f

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed data order [S, N] and negative label per training sample [S, N]."""
        train, seeds = self.data.train, self.model.seed_list
        n, dev = len(train), self.device
        order = torch.stack([torch.randperm(n, generator=g, device=dev)
                             for g in seed_generators(seeds, "order", epoch, device=dev)])
        gens = seed_generators(seeds, "negatives", epoch, device=dev)
        if self.cfg.data.negatives == "hard" and epoch > 0:
            goodness = self.all_label_goodness(train)  # [S, N, C]
            negatives = torch.stack([hard_negatives(goodness[s], train.y, g) for s, g in enumerate(gens)])
        else:
            negatives = torch.stack([random_negatives(train.y, self.data.num_classes, g) for g in gens])
        return order, negatives

    # ---- one step ----
    def train_step(self, idx: torch.Tensor, negatives: torch.Tensor, layers: range, sums: dict, step: int = 0,
                   augment_gens: list[torch.Generator] | None = None) -> None:
        train = self.data.train
        images, labels = train.images(idx), train.y[idx]
        if augment_gens is not None:
            images = self.augment(images, augment_gens)  # positives and negatives share the augmented image
        # no autocast context at all without mixed precision: not every device type has one (meta)
        precision = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                     else contextlib.nullcontext())
        with precision:
            label_sets = torch.stack([labels, negatives.gather(1, idx)], dim=1)  # positives, negatives: [S, 2, B]
            # the step enters only through its parity (APL), so a compiled step is not rebuilt every batch
            total, stepped, _, neutral = self.step_losses(images, label_sets, layers, step % 2, sums)
            if self.cfg.train.head:
                total = total + self.step_head_loss(neutral, labels, sums)
        self.scaler.scale(total).backward()
        for k in stepped:
            self.scaler.step(self.layer_opts[k])
            self.layer_opts[k].zero_grad(set_to_none=True)
        if self.cfg.train.head:
            self.scaler.step(self.head_opt)
            self.head_opt.zero_grad(set_to_none=True)
        self.scaler.update()

    def layer_losses(self, images: torch.Tensor, label_sets: torch.Tensor, layers: range, step: int, sums: dict):
        """Sum of the local losses of this step, the layers whose optimisers step, each layer's loss, and
        layer 0's output for the neutral label (for the head; None without one). Layer 0 sees the images with
        the positive and negative label sets [S, 2, B] (rows: positives, then negatives); each deeper layer's
        input is detached, except under APL where a block without a loss passes its output on attached."""
        model, cfg = self.model, self.cfg.model
        b = label_sets.shape[-1]
        total = images.new_zeros((), dtype=torch.float32)
        stepped, losses = [], {}
        neutral, inp = None, None
        for k in range(layers.stop):
            layer, obj = model.layers[k], model.objectives[k]
            if k == 0:
                with torch.set_grad_enabled(0 in layers and torch.is_grad_enabled()):
                    out, neutral = model.encoding.label_sets(layer, images, label_sets, self.cfg.train.head)
            elif k not in layers:
                with torch.no_grad():
                    out = layer(inp)
            else:
                attached = not self.computes_loss(k - 1, step) and (k - 1) in layers
                out = layer(inp if attached else model.layer_input(k, inp))
            if k not in layers:  # frozen (greedy): only carries the input upwards
                inp = out.out
                continue
            if not self.computes_loss(k, step):
                inp = out.out  # stays attached: the next block's loss trains this block too
                continue
            stepped.append(k)
            g, positive_mean = obj.goodness_and_positive_mean(out.act.float(), b if cfg.peer_norm > 0 else 0)
            g_pos, g_neg = g[:, :b], g[:, b:]
            loss = obj.loss(g_pos, g_neg)
            objective = loss
            if cfg.peer_norm > 0:
                running = peer_update(layer.peer_running, positive_mean, cfg.peer_momentum)
                layer.peer_running.copy_(running.detach())
                objective = loss + cfg.peer_norm * peer_loss(running)
            losses[k] = objective.sum()  # seeds add: each seed's gradient only sees its own loss
            total = total + losses[k]
            with torch.no_grad():
                sums["loss"][k] += loss * b
                sums["layer_acc"][k] += obj.binary_accuracy(g_pos, g_neg) * b
                sums["g_pos"][k] += g_pos.mean(-1) * b
                sums["g_neg"][k] += g_neg.mean(-1) * b
                sums["seen"][k] += b
            inp = out.out
        return total, stepped, losses, neutral

    def head_loss(self, neutral: LayerOutput, labels: torch.Tensor, sums: dict) -> torch.Tensor:
        """The linear head's loss on the neutral-label activities; `neutral` is layer 0's output."""
        model = self.model
        with torch.no_grad():
            outputs = [neutral, *model.forward_layers(neutral.out, start=1)]
        logits = model.head_logits(outputs).float()  # [S, B, C]
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
        with torch.no_grad():
            sums["head_loss"] += ce.sum(-1)
            sums["head_acc"] += (logits.argmax(-1) == labels).float().sum(-1)
        return ce.mean(-1).sum()

    # ---- evaluation ----
    def eval_negatives(self, name: str, split: Split) -> torch.Tensor:
        """One fixed wrong label per sample of a split, the same for every seed and epoch."""
        if name not in self._eval_negatives:
            g = device_generator(derive_seed("eval-negatives", name), self.device)
            self._eval_negatives[name] = random_negatives(split.y, self.data.num_classes, g)
        return self._eval_negatives[name]

    def eval_batch_images(self) -> int:
        """Images per evaluation batch: `train.eval_batch_size`, lowered until the widest layer's activities
        for all seeds and labels fit in what the device allows (`device.eval_batch_bytes`)."""
        widest = max(layer.units for layer in self.model.layers)
        per_image = self.model.seeds * self.data.num_classes * widest * 4
        return max(1, min(self.cfg.train.eval_batch_size, eval_batch_bytes(self.device) // per_image))

    @torch.no_grad()
    def all_label_goodness(self, split: Split) -> torch.Tensor:
        """Goodness of the classifier layers for every label, [S, N, C] (for hard negatives)."""
        self.model.eval()
        parts = []
        bs = self.eval_batch_images()
        for start in range(0, len(split), bs):
            g, _, _ = self.model.evaluate_batch(split.images(slice(start, start + bs)), with_head=False)
            parts.append(g[self.model.classifier_slice].sum(0))
        self.model.train()
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def evaluate(self, name: str, split: Split) -> dict[str, torch.Tensor]:
        """Per-layer [L, S] and network [S] metrics of a split: layer accuracies (binary and C-way), loss,
        goodness of positives and negatives, hardware statistics, and each classifier's accuracy."""
        model = self.model
        model.eval()
        neg_all = self.eval_negatives(name, split)
        n_layers, s = len(model.layers), model.seeds
        zeros = lambda: torch.zeros(n_layers, s, device=self.device)  # noqa: E731
        sums = {"loss": zeros(), "layer_acc": zeros(), "layer_acc10": zeros(), "g_pos": zeros(), "g_neg": zeros()}
        net = {"acc_goodness": torch.zeros(s, device=self.device), "acc_head": torch.zeros(s, device=self.device)}
        stat_sums: list[dict[str, torch.Tensor]] = [{} for _ in range(n_layers)]
        bs = self.eval_batch_images()
        for start in range(0, len(split), bs):
            sl = slice(start, start + bs)
            images, y, yn = split.images(sl), split.y[sl], neg_all[sl]
            n = len(y)
            goodness, logits, stats = model.evaluate_batch(images, with_head=self.cfg.train.head)
            idx_pos = y.view(1, 1, n, 1).expand(n_layers, s, n, 1)
            idx_neg = yn.view(1, 1, n, 1).expand(n_layers, s, n, 1)
            g_pos, g_neg = goodness.gather(-1, idx_pos)[..., 0], goodness.gather(-1, idx_neg)[..., 0]
            for k, obj in enumerate(model.objectives):
                sums["loss"][k] += obj.loss(g_pos[k], g_neg[k]) * n
                sums["layer_acc"][k] += obj.binary_accuracy(g_pos[k], g_neg[k]) * n
                for key, value in stats[k].items():
                    stat_sums[k][key] = stat_sums[k].get(key, 0) + value * n
            sums["layer_acc10"] += (goodness.argmax(-1) == y).float().sum(-1)
            sums["g_pos"] += g_pos.sum(-1)
            sums["g_neg"] += g_neg.sum(-1)
            net["acc_goodness"] += (goodness[model.classifier_slice].sum(0).argmax(-1) == y).float().sum(-1)
            if logits is not None:
                net["acc_head"] += (logits.argmax(-1) == y).float().sum(-1)
        model.train()
        total = len(split)
        result = {f"layer/{k}": v / total for k, v in sums.items()}
        for key in stat_sums[0]:
            result[f"layer/{key}"] = torch.stack([st[key] for st in stat_sums]) / total
        static = [layer.static_stats() for layer in model.layers]
        for key in static[0]:
            result[f"layer/{key}"] = torch.stack([torch.as_tensor(st[key], dtype=torch.float32, device=self.device)
                                                  .expand(s) for st in static])
        result["net/acc_goodness"] = net["acc_goodness"] / total
        if self.cfg.train.head:
            result["net/acc_head"] = net["acc_head"] / total
        return result

    # ---- records ----
    def to_rows(self, epoch: int, split: str, metrics: dict[str, torch.Tensor]) -> list[dict]:
        rows = []
        seeds = self.model.seed_list
        for key, value in metrics.items():
            scope, metric = key.split("/")
            values = value.detach().float().cpu().tolist()  # one transfer per metric
            if scope == "layer":
                for k, per_seed in enumerate(values):
                    rows += [dict(seed=sd, epoch=epoch, split=split, layer=str(k), metric=metric, value=v)
                             for sd, v in zip(seeds, per_seed)]
            else:
                rows += [dict(seed=sd, epoch=epoch, split=split, layer="net", metric=metric, value=v)
                         for sd, v in zip(seeds, values)]
        return rows

    def save(self, epoch: int, status: str, extra: dict | None = None) -> None:
        if self.run is None:
            return
        self.run.write_metrics(self.rows)
        self.run.write_summary(self.summary(epoch, status, extra or {}))

    def summary(self, epoch: int, status: str, extra: dict) -> dict:
        def final(split, metric):
            vals = {r["seed"]: r["value"] for r in self.rows
                    if r["split"] == split and r["layer"] == "net" and r["metric"] == metric}
            if not vals:
                return None
            v = torch.tensor(list(vals.values()), dtype=torch.float64)
            return {"per_seed": vals, "mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0}

        model = self.model
        out = {"status": status, "epochs_completed": epoch, "epochs": self.cfg.train.epochs,
               "layer_type": self.cfg.model.layer_type, "dataset": self.data.name,
               "device": str(self.device), "compiled": self.compiled, "seeds": model.seed_list,
               "parameters_per_seed": sum(layer.parameters_per_seed() for layer in model.layers),
               "deployed_weight_bytes_per_seed": sum(layer.deployed_weight_bytes() for layer in model.layers)}
        for metric in ("acc_goodness", "acc_head"):
            value = final("test", metric)
            if value is not None:
                out[f"test_{metric}"] = value
        out.update(extra)
        return out

    def train_seconds(self) -> float:
        """Training time of every epoch recorded, those before a resume included (from the rows)."""
        first = self.model.seed_list[0]
        return sum(r["value"] for r in self.rows if r["metric"] == "epoch_seconds" and r["seed"] == first)

    def non_finite(self, sums: dict, layers: range) -> dict | None:
        """The first non-finite loss or goodness of the epoch, or None (one host sync per epoch)."""
        for metric in ("loss", "g_pos", "g_neg", "head_loss"):
            values = sums[metric] if metric == "head_loss" else sums[metric][layers.start:layers.stop]
            bad = (~torch.isfinite(values)).nonzero()
            if len(bad):
                index = bad[0].tolist()
                layer = "net" if metric == "head_loss" else str(layers[index[0]])
                return {"metric": metric, "layer": layer, "seed": self.model.seed_list[index[-1]]}
        return None

    # ---- the loop ----
    def fit(self) -> dict:
        cfg, model, t = self.cfg, self.model, self.cfg.train
        train = self.data.train
        n, bs = len(train), t.batch_size
        n_batches = math.ceil(n / bs)
        n_layers, s = len(model.layers), model.seeds
        model.train()
        if self.ui:
            self.ui.start(t.epochs, n_batches, self.start_epoch)
        for epoch in range(self.start_epoch, t.epochs):
            torch.manual_seed(derive_seed(model.seed_list[0], "global", epoch))
            for k, layer in enumerate(model.layers):  # in-layer sampling, per seed
                layer.noise_generators = seed_generators(model.seed_list, "layer-noise", k, epoch, device=self.device)
            self.set_lr(epoch)
            layers = self.trained_layers(epoch)
            t0 = clock(self.device)
            order, negatives = self.epoch_plan(epoch)
            zeros = lambda: torch.zeros(n_layers, s, device=self.device)  # noqa: E731
            sums = {name: zeros() for name in LAYER_METRICS}
            sums["seen"] = zeros()  # training samples each layer computed its loss on
            sums["head_loss"] = torch.zeros(s, device=self.device)
            sums["head_acc"] = torch.zeros(s, device=self.device)
            augment_gens = seed_generators(model.seed_list, "augment", epoch, device=self.device) \
                if self.augment.active else None
            for b in range(n_batches):
                self.train_step(order[:, b * bs:(b + 1) * bs], negatives, layers, sums, b, augment_gens)
                if self.ui:
                    self.ui.batch()
            t1 = clock(self.device)
            epoch_seconds = t1 - t0
            trained = slice(layers.start, layers.stop)
            seen = sums["seen"][trained].clamp(min=1)
            train_metrics = {f"layer/{k}": sums[k][trained] / seen for k in LAYER_METRICS} if t.train_metrics else {}
            val = self.evaluate("val", self.data.val) if len(self.data.val) else {}
            eval_seconds = clock(self.device) - t1
            rows = []
            for key, value in train_metrics.items():
                for row in self.to_rows(epoch + 1, "train", {key: value}):
                    row["layer"] = str(layers[int(row["layer"])])  # rows of trained layers only
                    rows.append(row)
            if t.head and t.train_metrics:
                rows += self.to_rows(epoch + 1, "train", {"net/head_loss": sums["head_loss"] / n,
                                                          "net/head_acc": sums["head_acc"] / n})
            rows += self.to_rows(epoch + 1, "val", val)
            rows += self.to_rows(epoch + 1, "train", {"net/epoch_seconds": torch.full((s,), epoch_seconds),
                                                      "net/eval_seconds": torch.full((s,), eval_seconds)})
            self.rows += rows
            bad = self.non_finite(sums, layers)
            if bad:
                self.save(epoch + 1, "diverged", {"diverged": bad})
                raise DivergenceError(
                    f"training diverged in epoch {epoch + 1} (non-finite {bad['metric']} in layer {bad['layer']}, "
                    f"seed {bad['seed']}); records up to it are kept{' in ' + str(self.run.path) if self.run else ''}; "
                    f"lower --lr or change the loss/threshold")
            # Records first, then the checkpoint: a kill between the two leaves rows the resumed run drops
            # (it keeps rows up to the checkpoint's epoch), never a checkpoint whose epoch has no rows.
            self.save(epoch + 1, "running")
            if self.run is not None:
                self.run.save_checkpoint(self.state_dict(epoch + 1))
            if self.ui:
                self.ui.epoch(epoch + 1, rows, epoch_seconds, eval_seconds)
        final_epoch = t.epochs
        test = self.evaluate("test", self.data.test)
        self.rows += self.to_rows(final_epoch, "test", test)
        if self.run is not None:
            self.run.save_model(model, cfg)
        extra = {"train_seconds": self.train_seconds()}
        if self.resumed_from not in (None, self.device.type):
            extra["resumed_on_other_device"] = {"checkpoint": self.resumed_from, "resumed": self.device.type}
        self.save(final_epoch, "complete", extra)
        summary = self.summary(final_epoch, "complete", extra)
        if self.ui:
            self.ui.done(summary, [r for r in self.rows if r["split"] == "test"])
        return summary
