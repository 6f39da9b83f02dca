"""An FF network: label encoding, a stack of FF layers (any one type), their objectives and the classifiers.

Classifiers:
- goodness: embed every label, sum the goodness of the chosen layers, predict the argmax;
- head: loeweX's linear classifier on the (RMS-normalised, detached) activities of the chosen layers for
  the neutral label; zero-initialised, trained beside the layers.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from .config import CONV_ARCHITECTURES, RunConfig
from .encode import AllLabelInputs, LabelChannel, LabelEncoding, LabelSetInputs
from .errors import ConfigError, RunDirError
from .files import torch_load
from .layers import LayerOutput, get_layer_type
from .objectives import Objective


CLASSIFIERS = ("goodness", "head")  # summed goodness over labels, or the linear head on neutral-label activities


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (run seed, epoch, stream name...): the same parts, the same seed."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_generators(seeds: list[int], *parts, device="cpu") -> list[torch.Generator]:
    """One generator per seed, on `device`, seeded from (seed, *parts): every random stream of a run."""
    return [device_generator(derive_seed(s, *parts), device) for s in seeds]


def device_generator(seed: int, device="cpu") -> torch.Generator:
    """A seeded generator on `device` (the one place generators are made, so a dry run can stand them in)."""
    return torch.Generator(device=device).manual_seed(seed)


def network_size(cfg: RunConfig, image_shape: tuple[int, ...], num_classes: int) -> tuple[int, int]:
    """Weights per seed and units of the widest layer, from the config alone (no network is built)."""
    m = cfg.model
    if m.architecture == "fc":
        dims = [math.prod(image_shape) + (num_classes if cfg.data.encoding == "concat" else 0), *m.hidden]
        return sum(a * b + b for a, b in zip(dims, dims[1:])), max(m.hidden)
    channels, pools = CONV_ARCHITECTURES[m.architecture]
    c, h, w = image_shape[0] + 1, *image_shape[-2:]  # the label channel
    params = widest = 0
    for k, width in enumerate(channels):
        out = max(1, round(width * m.width_scale))
        h, w = (h // 2, w // 2) if k in pools else (h, w)
        params, widest, c = params + 9 * c * out, max(widest, out * h * w), out
    return params, widest


def classifier_layers(rule: str, n: int) -> list[int]:
    """The layers a classifier of an n-layer network reads, by the config's rule."""
    return {"all-but-first": list(range(1, n)), "all": list(range(n)), "last": [n - 1]}[rule] or list(range(n))


class FFNet(nn.Module):
    def __init__(self, cfg: RunConfig, image_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        m = cfg.model
        self.seed_list = [cfg.train.seed + i for i in range(cfg.train.seeds)]
        self.num_classes, self.goodness_kind = num_classes, m.goodness
        seeds = len(self.seed_list)
        layer_cls = get_layer_type(m.layer_type, conv=m.architecture != "fc")
        self.options = layer_cls.resolve_options(dict(m.layer))
        layers = []
        if m.architecture == "fc":
            self.encoding = LabelEncoding(cfg.data.encoding, num_classes, image_shape)
            dims = [self.encoding.in_dim, *[int(w) for w in m.hidden]]
            for k in range(len(dims) - 1):
                layers.append(layer_cls(k, dims[k], dims[k + 1], seeds, m, self.options,
                                        seed_generators(self.seed_list, "init", k)))
        else:
            self.encoding = LabelChannel(num_classes, image_shape, seed_generators(self.seed_list, "label-channel"))
            channels, pools = CONV_ARCHITECTURES[m.architecture]
            shape = self.encoding.in_shape
            for k, width in enumerate(channels):
                layer = layer_cls(k, shape, max(1, round(width * m.width_scale)), k in pools, seeds, m,
                                  self.options, seed_generators(self.seed_list, "init", k))
                layers.append(layer)
                shape = layer.out_shape
        self.layers = nn.ModuleList(layers)
        self.objectives = nn.ModuleList(Objective(m, layer.units, seeds) for layer in self.layers)
        n = len(self.layers)
        self.classifier_layers = classifier_layers(m.classifier_layers, n)
        # the same layers as a slice: indexing a tensor with a Python list copies the list to the device first
        self.classifier_slice = slice(self.classifier_layers[0], self.classifier_layers[-1] + 1)
        features = sum(self.layers[k].units for k in self.classifier_layers) if cfg.train.head else 0
        self.head_weight = nn.Parameter(torch.zeros(seeds, features, num_classes))
        self.head_bias = nn.Parameter(torch.zeros(seeds, 1, num_classes))
        # Nested depth design: each prefix depth D has the classifiers a D-layer network of this config has.
        self.prefix_depths = list(m.prefix_depths)
        self.prefix_classifiers = {d: classifier_layers(m.classifier_layers, d) for d in self.prefix_depths}
        head_d = [sum(self.layers[k].units for k in self.prefix_classifiers[d]) if cfg.train.head else 0
                  for d in self.prefix_depths]
        self.prefix_head_weights = nn.ParameterList(nn.Parameter(torch.zeros(seeds, f, num_classes)) for f in head_d)
        self.prefix_head_biases = nn.ParameterList(nn.Parameter(torch.zeros(seeds, 1, num_classes)) for _ in head_d)
        # Saved with the weights so that `load_model` can rebuild the network from model.pt alone.
        self.register_buffer("_image_shape", torch.tensor(image_shape))
        self.register_buffer("_num_classes", torch.tensor(num_classes))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Models saved before the peer-normalisation state moved to the objectives kept it in the layers."""
        for k in range(len(self.layers)):
            old = f"{prefix}layers.{k}.peer_running"
            if old in state_dict:
                state_dict[f"{prefix}objectives.{k}.peer_running"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fuse_evaluation(self, on: bool = True) -> None:
        """Evaluate with the layer type's fused (compiled) kernels where it has them (see layers/fused.py)."""
        for layer in self.layers:
            layer.fused_evaluation = on

    @property
    def seeds(self) -> int:
        return len(self.seed_list)

    def layer_parameters(self, k: int) -> list[nn.Parameter]:
        """Parameters layer k's optimiser owns: a learned label channel is trained with layer 0."""
        extra = list(self.encoding.parameters()) if k == 0 else []
        return list(self.layers[k].parameters()) + extra

    def head_parameters(self) -> list[nn.Parameter]:
        return [self.head_weight, self.head_bias]

    def prefix_head_parameters(self, i: int) -> list[nn.Parameter]:
        """The linear head of prefix depth self.prefix_depths[i] (its own optimiser, as a separate network's)."""
        return [self.prefix_head_weights[i], self.prefix_head_biases[i]]

    def expand_seeds(self, x: torch.Tensor) -> torch.Tensor:
        """The same inputs for every seed: [N, ...] -> [S, N, ...] (a view, no copy)."""
        return x.unsqueeze(0).expand(self.seeds, *x.shape)

    @staticmethod
    def layer_input(k: int, x: torch.Tensor) -> torch.Tensor:
        """What layer k learns from: deeper layers get a detached input (no gradient crosses a layer); layer 0's
        input stays attached to the encoding, so a learned label channel trains with layer 0's loss."""
        return x if k == 0 else x.detach()

    def first_layer_label_sets(self, images: torch.Tensor, labels: torch.Tensor, neutral: bool):
        """Layer 0 in a training step: images [S, N, ...] with K label sets [S, K, N] -> LayerOutput over
        [S, K*N] (set after set), and with `neutral` the neutral-label pass without gradient [S, N] (else
        None). Where the encoding splits image and label, the layer projects each image once for all sets."""
        inputs: LabelSetInputs = self.encoding.label_sets(images, labels, neutral)
        layer = self.layers[0]
        if inputs.full is None:
            return layer.forward_label_sets(inputs.base, inputs.patterns, inputs.labels, inputs.frozen_labels)
        out = layer(inputs.full)
        with torch.no_grad():
            frozen = layer(inputs.frozen_full) if inputs.frozen_full is not None else None
        return out, frozen

    def first_layer_all_labels(self, images: torch.Tensor, neutral: bool = False):
        """Layer 0 on every label of images [N, ...] -> LayerOutput over [S, N*C] (all labels of image 0
        first), and with `neutral` on the neutral label [S, N] (else None)."""
        inputs: AllLabelInputs = self.encoding.all_labels(images, self.seeds, neutral)
        layer = self.layers[0]
        if inputs.full is None:
            return layer.forward_labels(inputs.base, inputs.patterns, inputs.neutral)
        out = layer(inputs.full)
        return out, (layer(inputs.neutral_full) if inputs.neutral_full is not None else None)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor) -> None:
        """Data-dependent initialisation, layer by layer from the bottom: each layer calibrates itself on its
        real inputs (every label of `images`, through the layers below as already calibrated)."""
        if not any(layer.needs_calibration() for layer in self.layers):
            return
        was_training = self.training
        self.eval()
        first = lambda _: self.first_layer_all_labels(images)[0]  # noqa: E731
        self.layers[0].calibrate(first, images)
        inp = first(images).out
        for layer in self.layers[1:]:
            layer.calibrate(layer, inp)
            inp = layer(inp).out
        self.train(was_training)

    def forward_layers(self, x: torch.Tensor, start: int = 0) -> list[LayerOutput]:
        """Run layers start.. on their input x [S, N, ...] (encoded inputs for layer 0), each on its
        `layer_input` (learning stays local)."""
        outputs, inp = [], x
        for k in range(start, len(self.layers)):
            out = self.layers[k](self.layer_input(k, inp))
            outputs.append(out)
            inp = out.out
        return outputs

    def head_features(self, outputs: list[LayerOutput], layers: list[int]) -> torch.Tensor:
        """The RMS-normalised activities of `layers`, concatenated: [S, N, sum of units] (detached)."""
        parts = []
        for k in layers:
            a, sum_sq = outputs[k].act.detach().flatten(2), outputs[k].act_sum_sq  # sum_sq: from a fused kernel
            norm = torch.linalg.vector_norm(a, dim=-1, keepdim=True) if sum_sq is None else sum_sq.unsqueeze(-1).sqrt()
            parts.append(a * (1.0 / (norm / a.shape[-1] ** 0.5 + 1e-8)))
        return torch.cat(parts, dim=-1)

    def head_logits(self, outputs: list[LayerOutput], prefix: int | None = None,
                    features: torch.Tensor | None = None) -> torch.Tensor:
        """Linear head on the concatenated, RMS-normalised activities of the classifier layers: [S, N, C]
        (`prefix`: the head of the i-th prefix depth, on its own classifier layers). `features`: the main
        head's `head_features`, which a prefix head whose layers lead the main head's reads a slice of.
        One product per head, computed transposed ([C, F] x [F, N]): with C = 10 output columns the
        untransposed product ran at a fraction of the CPU's matmul rate (docs/performance.md)."""
        if prefix is None:
            layers, weight, bias = self.classifier_layers, self.head_weight, self.head_bias
        else:
            layers = self.prefix_classifiers[self.prefix_depths[prefix]]
            weight, bias = self.prefix_head_weights[prefix], self.prefix_head_biases[prefix]
        if features is None or list(layers) != list(self.classifier_layers[:len(layers)]):
            features = self.head_features(outputs, layers)
        logits_t = torch.baddbmm(bias.transpose(1, 2), weight.transpose(1, 2), features[..., :weight.shape[1]].transpose(1, 2))
        return logits_t.transpose(1, 2)

    def all_head_logits(self, outputs: list[LayerOutput]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The main head's logits and each prefix depth's {depth: logits}, the features built once."""
        features = self.head_features(outputs, self.classifier_layers)
        return (self.head_logits(outputs, features=features),
                {d: self.head_logits(outputs, i, features) for i, d in enumerate(self.prefix_depths)})

    @torch.no_grad()
    def evaluate_batch(self, images: torch.Tensor, with_head: bool = True, prefixes: bool = False):
        """Everything evaluation needs for one batch of images [N, ...] (shared by all seeds).

        Returns goodness [L, S, N, C] for every label, head logits [S, N, C] (or None), and each layer's
        hardware statistics ([S] means; `unit_activity`: [S, U] counts of rows each unit was active in);
        with `prefixes`, also the prefix heads' logits {depth: [S, N, C]} (empty without a head).
        Layer 0 projects each image once for all labels and the neutral label (`forward_labels`); the rest
        run on the N*C label-embedded activities (and the N neutral ones).
        """
        s, n, c = self.seeds, images.shape[0], self.num_classes
        out, neutral = self.first_layer_all_labels(images, neutral=with_head)
        goodness, stats, last = [], [], len(self.layers) - 1
        for k, (layer, obj) in enumerate(zip(self.layers, self.objectives)):
            if k:
                out = layer.evaluate(out, keep_output=k < last)
            # read while the layer's output is freshly written (faster than after all layers)
            goodness.append(obj.goodness_of(out).reshape(s, n, c))
            stats.append(layer.hardware_stats(out))
        goodness = torch.stack(goodness)
        logits = None
        if with_head:
            outputs = [neutral]
            for layer in self.layers[1:]:
                outputs.append(layer.evaluate(outputs[-1]))
            logits, heads = self.all_head_logits(outputs) if prefixes else (self.head_logits(outputs), {})
        if not prefixes:
            return goodness, logits, stats
        return goodness, logits, stats, heads if with_head else {}

    @torch.no_grad()
    def class_scores(self, images: torch.Tensor, classifier: str = "goodness") -> torch.Tensor:
        """Scores [S, N, C] of the goodness classifier (summed goodness per label) or the linear head."""
        goodness, logits, _ = self.evaluate_batch(images, with_head=classifier == "head")
        return logits if classifier == "head" else goodness[self.classifier_slice].sum(0)

    def predict(self, images: torch.Tensor, classifier: str = "goodness") -> torch.Tensor:
        """Class predictions [S, N] with the goodness classifier or the linear head."""
        return self.class_scores(images, classifier).argmax(-1)


def with_legacy_options(config: dict) -> dict:
    """A saved config's layer options, completed with what its layer type used before an option existed
    (`Options.LEGACY`): a saved config names every option that existed when it ran."""
    model = dict(config.get("model", {}))
    layer_cls = get_layer_type(model.get("layer_type", "standard"),
                               conv=model.get("architecture", "fc") in CONV_ARCHITECTURES)
    model["layer"] = {**getattr(layer_cls.Options, "LEGACY", {}), **model.get("layer", {})}
    return {**config, "model": model}


def load_model(run_dir, device: str = "cpu") -> tuple[FFNet, RunConfig]:
    """Rebuild a trained network from `<run_dir>/model.pt` (or a model.pt path). Returns (model, config)."""
    from pathlib import Path

    path = Path(run_dir)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise RunDirError(f"{path} not found; train a model first (python -m ffhw.run ...)")
    fix = "it is not a model ffhw saved: train the run again (python -m ffhw.run ...)"
    blob = torch_load(path, fix, map_location=device)
    try:
        cfg = RunConfig.from_dict(with_legacy_options(blob["config"])).validate()
        state = blob["state_dict"]
        image_shape, num_classes = tuple(state["_image_shape"].tolist()), int(state["_num_classes"])
        model = FFNet(cfg, image_shape, num_classes).to(device)
        model.load_state_dict(state)
    except (KeyError, TypeError, AttributeError, RuntimeError, ConfigError) as exc:
        raise RunDirError(f"{path} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); {fix}") from None
    model.eval()
    return model, cfg
