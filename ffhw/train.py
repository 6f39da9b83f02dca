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

from .augment import Augment
from .config import RunConfig
from .data import Data, Split
from .device import clock, configure_compile, make_optimizer, set_deterministic, tune_runtime, use_compile
from .encode import hard_negatives, random_negatives
from .files import process_code
from .layers import LayerOutput
from .metrics import (add_head_step, add_layer_step, classifier_goodness, divergence, eval_images_per_batch,
                      evaluate_split, head_cross_entropy, health_message, layer_health, metric_rows, non_finite,
                      run_summary, total_train_seconds, training_metrics, training_sums)
from .model import FFNet, derive_seed, device_generator, seed_generators
from .records import NoRecords, RunDir


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for a 0-based epoch."""
    if schedule == "cooldown":  # loeweX: constant for the first half, then linearly down towards zero
        return min(1.0, 2.0 * (epochs - epoch) / epochs)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return 1.0


CALIBRATION_IMAGES = 100  # the first training images set data-dependent initialisations (layer types that have one)


class Trainer:
    def __init__(self, cfg: RunConfig, data: Data, model: FFNet, device: torch.device,
                 run: RunDir | None = None, ui=None):
        self.cfg, self.data, self.model, self.device = cfg, data, model, device
        self.sink = run if run is not None else NoRecords()  # where rows, summaries and checkpoints go
        process_code()  # records name the code loaded now, not the checkout at the time they are written
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
        self.prefix_opts = [make_optimizer(model.prefix_head_parameters(i), t.optimizer, t.head_lr, t.head_weight_decay,
                                           t.momentum) for i in range(len(model.prefix_depths))]
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
        self.warnings: list[dict] = []  # layers found silent or saturated (metrics.layer_health)
        self._eval_negatives: dict[str, torch.Tensor] = {}
        self.probe_seconds = 0.0  # time spent probing in the current epoch (not training time)

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
                "layer_opts": [o.state_dict() for o in self.layer_opts], "head_opt": self.head_opt.state_dict(),
                "prefix_opts": [o.state_dict() for o in self.prefix_opts]}

    def load_state_dict(self, state: dict, rows: list[dict]) -> None:
        self.model.load_state_dict(state["model"])
        for opt, sd in zip(self.layer_opts, state["layer_opts"]):
            opt.load_state_dict(sd)
        self.head_opt.load_state_dict(state["head_opt"])
        for opt, sd in zip(self.prefix_opts, state.get("prefix_opts", [])):
            opt.load_state_dict(sd)
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
        for opt in (self.head_opt, *self.prefix_opts):
            for group in opt.param_groups:
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
        with self.precision():
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
            for opt in (self.head_opt, *self.prefix_opts):
                self.scaler.step(opt)
                opt.zero_grad(set_to_none=True)
        self.scaler.update()

    def layer_losses(self, images: torch.Tensor, label_sets: torch.Tensor, layers: range, step: int, sums: dict):
        """Sum of the local losses of this step, the layers whose optimisers step, each layer's loss, and
        layer 0's output for the neutral label (for the head; None without one). Layer 0 sees the images with
        the positive and negative label sets [S, 2, B] (rows: positives, then negatives); each deeper layer's
        input is detached, except under APL where a block without a loss passes its output on attached."""
        model = self.model
        b = label_sets.shape[-1]
        total = images.new_zeros((), dtype=torch.float32)
        stepped, losses = [], {}
        neutral, inp = None, None
        for k in range(layers.stop):
            layer, obj = model.layers[k], model.objectives[k]
            if k == 0:
                with torch.set_grad_enabled(0 in layers and torch.is_grad_enabled()):
                    out, neutral = model.first_layer_label_sets(images, label_sets, self.cfg.train.head)
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
            objective, loss, g_pos, g_neg = obj.training_loss(out.act.float(), b)
            losses[k] = objective.sum()  # seeds add: each seed's gradient only sees its own loss
            total = total + losses[k]
            add_layer_step(sums, k, obj, loss, g_pos, g_neg)
            inp = out.out
        return total, stepped, losses, neutral

    def head_loss(self, neutral: LayerOutput, labels: torch.Tensor, sums: dict) -> torch.Tensor:
        """The linear head's loss on the neutral-label activities; `neutral` is layer 0's output."""
        model = self.model
        with torch.no_grad():
            outputs = [neutral, *model.forward_layers(neutral.out, start=1)]
        logits, prefix_logits = model.all_head_logits(outputs)  # [S, B, C]; the nested design's prefix heads
        ce = head_cross_entropy(logits.float(), labels)
        add_head_step(sums, logits, ce, labels)
        total = ce.mean(-1).sum()
        for prefix in prefix_logits.values():  # each prefix's own head, on the same activities
            total = total + head_cross_entropy(prefix.float(), labels).mean(-1).sum()
        return total

    # ---- evaluation ----
    def eval_negatives(self, name: str, split: Split) -> torch.Tensor:
        """One fixed wrong label per sample of a split, the same for every seed and epoch."""
        if name not in self._eval_negatives:
            g = device_generator(derive_seed("eval-negatives", name), self.device)
            self._eval_negatives[name] = random_negatives(split.y, self.data.num_classes, g)
        return self._eval_negatives[name]

    def eval_batch_images(self) -> int:
        return eval_images_per_batch(self.model, self.data.num_classes, self.cfg.train.eval_batch_size, self.device)

    def precision(self):
        """The training passes' precision context; no autocast context at all without mixed precision (not
        every device type has one: meta)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def all_label_goodness(self, split: Split) -> torch.Tensor:
        """Goodness of every label on `split` for drawing hard negatives: part of training, so it runs at
        the training passes' precision (the reported metrics stay float32)."""
        with self.precision():
            return classifier_goodness(self.model, split, self.eval_batch_images())

    def probe(self, epoch: float) -> None:
        """Layer metrics on the fixed probe images at a fractional epoch (split "probe"). Any sampling inside
        the layers draws from probe streams, so probing leaves training's random streams untouched."""
        t, model = self.cfg.train, self.model
        split = Split(self.data.val.x[:t.probe_size], self.data.val.y[:t.probe_size])
        saved = [layer.noise_generators for layer in model.layers]
        for k, layer in enumerate(model.layers):
            layer.noise_generators = seed_generators(model.seed_list, "probe", k, epoch, device=self.device)
        start = clock(self.device)
        self.rows += metric_rows(model.seed_list, epoch, "probe", self.evaluate("probe", split))
        self.probe_seconds += clock(self.device) - start
        for layer, gens in zip(model.layers, saved):
            layer.noise_generators = gens

    def probe_steps(self, epoch: int, n_batches: int) -> set[int]:
        """Batches of this epoch after which to probe (none without probes or validation images)."""
        t = self.cfg.train
        if not t.probes_per_epoch or not len(self.data.val):
            return set()
        per_epoch = t.probes_per_epoch if epoch < t.probe_epochs else 1
        return {max(0, round((i + 1) * n_batches / per_epoch) - 1) for i in range(per_epoch)}

    def evaluate(self, name: str, split: Split) -> dict[str, torch.Tensor]:
        return evaluate_split(self.model, split, self.eval_negatives(name, split), self.eval_batch_images(),
                                self.cfg.train.head)

    # ---- records ----
    def summary(self, epoch: int, status: str, extra: dict | None = None) -> dict:
        extra = {**({"layer_warnings": self.warnings} if self.warnings else {}), **(extra or {})}
        return run_summary(self.rows, self.model, self.cfg, self.data.name, self.device, self.compiled, epoch,
                           status, extra)

    def check_health(self, val: dict, epoch: int) -> None:
        """Warn (console and summary.json) the first time a layer turns silent or saturated."""
        for entry in layer_health(val, self.model.seed_list):
            if any(w["layer"] == entry["layer"] and w["condition"] == entry["condition"] for w in self.warnings):
                continue
            message = health_message(entry, epoch)
            self.warnings.append({**entry, "epoch": epoch, "message": message})
            if hasattr(self.ui, "warn"):
                self.ui.warn(message)

    def start_epoch_streams(self, epoch: int) -> None:
        """Every random stream of an epoch, from (seed, epoch): a resumed run replays an uninterrupted one."""
        model = self.model
        torch.manual_seed(derive_seed(model.seed_list[0], "global", epoch))
        for k, layer in enumerate(model.layers):  # in-layer sampling, per seed
            layer.noise_generators = seed_generators(model.seed_list, "layer-noise", k, epoch, device=self.device)

    # ---- the loop ----
    def fit(self) -> dict:
        cfg, model, t = self.cfg, self.model, self.cfg.train
        n, bs = len(self.data.train), t.batch_size
        n_batches, seeds = math.ceil(n / bs), model.seed_list
        if self.start_epoch == 0:  # a resumed run's weights are already past their initialisation
            for k, layer in enumerate(model.layers):  # any sampling during calibration: per seed, as in training
                layer.noise_generators = seed_generators(seeds, "calibrate", k, device=self.device)
            model.calibrate(self.data.train.images(slice(0, CALIBRATION_IMAGES)))
        if self.start_epoch == 0 and self.probe_steps(0, n_batches):
            self.probe(0.0)  # before the first step: where every learning curve starts
        model.train()
        if self.ui:
            self.ui.start(t.epochs, n_batches, self.start_epoch)
        for epoch in range(self.start_epoch, t.epochs):
            self.start_epoch_streams(epoch)
            self.set_lr(epoch)
            layers = self.trained_layers(epoch)
            t0 = clock(self.device)
            order, negatives = self.epoch_plan(epoch)
            sums = training_sums(len(model.layers), model.seeds, self.device)
            augment_gens = seed_generators(seeds, "augment", epoch, device=self.device) if self.augment.active else None
            probes, self.probe_seconds = self.probe_steps(epoch, n_batches), 0.0
            for b in range(n_batches):
                self.train_step(order[:, b * bs:(b + 1) * bs], negatives, layers, sums, b, augment_gens)
                if b in probes:
                    self.probe(epoch + (b + 1) / n_batches)
                if self.ui:
                    self.ui.batch()
            t1 = clock(self.device)
            val = self.evaluate("val", self.data.val) if len(self.data.val) else {}
            eval_seconds = clock(self.device) - t1
            self.check_health(val, epoch + 1)
            rows = []
            if t.train_metrics:
                rows += metric_rows(seeds, epoch + 1, "train", training_metrics(sums, layers, n, t.head),
                                     layer_names=[str(k) for k in layers])
            rows += metric_rows(seeds, epoch + 1, "val", val)
            timing = {"net/epoch_seconds": torch.full((model.seeds,), t1 - t0 - self.probe_seconds),
                      "net/eval_seconds": torch.full((model.seeds,), eval_seconds)}
            rows += metric_rows(seeds, epoch + 1, "train", timing)
            self.rows += rows
            bad = non_finite(sums, layers, seeds)
            if bad:
                self.sink.record(self.rows, self.summary(epoch + 1, "diverged", {"diverged": bad}))
                raise divergence(bad, epoch + 1, f" in {self.sink.path}" if self.sink.path else "")
            # Records first, then the checkpoint: a kill between the two leaves rows the resumed run drops
            # (it keeps rows up to the checkpoint's epoch), never a checkpoint whose epoch has no rows.
            self.sink.record(self.rows, self.summary(epoch + 1, "running"))
            self.sink.save_checkpoint(self.state_dict(epoch + 1))
            if self.ui:
                self.ui.epoch(epoch + 1, rows, t1 - t0, eval_seconds)
        self.rows += metric_rows(seeds, t.epochs, "test", self.evaluate("test", self.data.test))
        self.sink.save_model(model, cfg)
        extra = {"train_seconds": total_train_seconds(self.rows, seeds[0])}
        if self.resumed_from not in (None, self.device.type):
            extra["resumed_on_other_device"] = {"checkpoint": self.resumed_from, "resumed": self.device.type}
        summary = self.summary(t.epochs, "complete", extra)
        self.sink.record(self.rows, summary)
        if self.ui:
            self.ui.done(summary, [r for r in self.rows if r["split"] == "test"])
        return summary
