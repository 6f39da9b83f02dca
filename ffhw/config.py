"""Typed run configuration, TOML presets and overrides.

A run is described by one `RunConfig` (data, model, train). Presets are plain TOML files with the same
tables (`[data]`, `[model]`, `[model.layer]`, `[train]`); anything left out keeps its default. The fully
resolved config is saved next to every result as `config.toml`.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
import tomli_w

from .errors import ConfigError

# The Trifecta networks (Dooms et al.): channels per block and the blocks followed by a 2x2 max-pool.
CONV_ARCHITECTURES = {
    "small": ([128, 128, 256, 256, 256, 512], {0, 2, 5}),
    "large": ([64, 128, 128, 128, 128, 256, 256, 256, 256, 512, 512, 512], {1, 5, 9}),
}

CHOICES = {
    "data.encoding": ("onehot", "border", "concat", "channel"),
    "model.architecture": ("fc", *CONV_ARCHITECTURES),
    "model.block_norm": ("batch", "layer", "none"),
    "data.negatives": ("random", "hard"),
    "model.goodness": ("sum", "mean"),
    "model.loss": ("threshold", "symba"),
    "model.norm": ("rms", "l2", "none"),
    "model.classifier_layers": ("all-but-first", "all", "last"),
    "train.optimizer": ("sgd", "adam"),
    "train.lr_schedule": ("constant", "cooldown", "cosine"),
    "train.schedule": ("simultaneous", "greedy", "apl"),
    "train.autocast": ("none", "bf16", "fp16"),
    "train.compile": ("auto", "on", "off"),
    "train.device": ("auto", "cpu", "cuda", "mps"),
}


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric option: low <= value <= high (strict where `*_open`); None: unbounded."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, path: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):
            raise ConfigError(f"{path} = {value} must be a finite number")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above:
            raise ConfigError(f"{path} = {value} is out of range: it must be {self.describe()}")

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts) or "finite"


POSITIVE, NON_NEGATIVE, AT_LEAST_ONE = Range(0, low_open=True), Range(0), Range(1)
FRACTION = Range(0, 1, high_open=True)  # momenta: 1 would never forget
# Every numeric option's allowed range; every float must be finite besides (checked by `check_ranges`).
RANGES = {
    "data.val_size": NON_NEGATIVE, "data.train_subset": NON_NEGATIVE, "data.test_subset": NON_NEGATIVE,
    "data.crop_padding": NON_NEGATIVE, "data.max_rotation": Range(0, 180),
    "model.width_scale": POSITIVE, "model.theta": POSITIVE, "model.alpha": POSITIVE,
    "model.peer_norm": NON_NEGATIVE, "model.peer_momentum": FRACTION,
    "train.epochs": AT_LEAST_ONE, "train.batch_size": AT_LEAST_ONE, "train.lr": POSITIVE,
    "train.momentum": FRACTION, "train.weight_decay": NON_NEGATIVE, "train.head_lr": POSITIVE,
    "train.head_weight_decay": NON_NEGATIVE, "train.seed": NON_NEGATIVE, "train.seeds": AT_LEAST_ONE,
    "train.eval_batch_size": AT_LEAST_ONE, "train.probes_per_epoch": NON_NEGATIVE, "train.probe_epochs": NON_NEGATIVE,
    "train.probe_size": AT_LEAST_ONE,
}


def check_ranges(obj: Any, ranges: dict[str, Range], prefix: str = "") -> None:
    """Check every numeric field of a dataclass (recursively) against `ranges` (keyed by dotted path)
    and for finiteness: the one place numeric options are validated."""
    for f in fields(obj):
        path, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, ranges, path + ".")
        else:
            ranges.get(path, Range()).check(path, value)


# A name that becomes a directory: one path component of ordinary characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def safe_component(name: str, what: str) -> str:
    """`name` if it is usable as one directory name (no separators, no '..', no leading dot), else a ConfigError."""
    text = str(name)
    if not SAFE_NAME.fullmatch(text) or len(text) > 200:
        raise ConfigError(f"{what} {text!r} must be one directory name of letters, digits and . _ + = - "
                          f"(no '/', no leading '.' or '-'); choose another")
    return text


@dataclass
class DataConfig:
    dataset: str = "mnist"
    data_dir: str = ""  # empty: --data-dir, else $FFHW_DATA, else the per-user cache (see ffhw.data)
    val_size: int = 10000  # carved deterministically from the training set; the test set is for test metrics only
    train_subset: int = 0  # use only the first N training samples (0: all); for quick checks and tests
    test_subset: int = 0  # evaluate on the first N test samples only (0: all); for quick checks and tests
    encoding: str = "onehot"  # where the label goes: first C pixels, image border, appended, or a learned channel (conv)
    negatives: str = "random"  # random wrong label, or hard: drawn by the network's softmax over wrong labels' goodness
    crop_padding: int = 0  # training augmentation: random crop of the zero-padded image (Trifecta: 4)
    max_rotation: float = 0.0  # training augmentation: random rotation in [-deg, deg] (Trifecta: 15)


@dataclass
class ModelConfig:
    layer_type: str = "standard"
    architecture: str = "fc"  # fc: `hidden` widths; small / large: the Trifecta conv networks (6 / 12 blocks)
    hidden: list[int] = field(default_factory=lambda: [1000, 1000, 1000])
    width_scale: float = 1.0  # conv: multiplies every block's channels
    block_norm: str = "batch"  # conv: normaliser at each block's input (batch, layer, none)
    goodness: str = "sum"  # sum or mean of squared activities (rates for spiking layers)
    loss: str = "threshold"
    # Threshold per unit: the threshold on sum goodness is theta * width (loeweX: theta = width),
    # on mean goodness it is theta itself (Trifecta: tau = 2).
    theta: float = 1.0
    alpha: float = 4.0  # SymBa sharpness
    norm: str = "rms"  # normalisation of each layer's input: rms (loeweX), l2 (Hinton), none
    peer_norm: float = 0.03  # weight of peer normalisation (0 disables)
    peer_momentum: float = 0.9
    straight_through: bool = True  # ReLU forward, identity gradient backward (loeweX)
    classifier_layers: str = "all-but-first"  # layers whose goodness is summed by the goodness classifier
    # The nested depth design: shallower networks evaluated as prefixes of this one (FC, simultaneous schedule:
    # layer-local learning makes a prefix bit-identical to the shallower network), each with its own goodness
    # classifier and linear head; their metrics are recorded as acc_goodness@D and acc_head@D.
    prefix_depths: list[int] = field(default_factory=list)
    layer: dict[str, Any] = field(default_factory=dict)  # options of the chosen layer type


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 3e-4
    lr_schedule: str = "cooldown"  # loeweX: constant, then linear to zero over the second half
    # simultaneous: every layer learns on every batch from its detached input; greedy: one layer after
    # another; apl: the Trifecta's alternating overlapping pairs (the parity of the batch index picks the
    # blocks that compute a loss; such a block's optimiser also updates the block below it, whose output
    # stays attached), so pairs (0,1),(2,3).. and (1,2),(3,4).. take turns
    schedule: str = "simultaneous"
    autocast: str = "none"  # mixed precision for the forward passes: none, bf16, fp16 (with a gradient scaler)
    tf32: bool = False  # CUDA: fp32 matmuls and convolutions on TF32 tensor cores (no effect on the CPU)
    # torch.compile the per-step losses and the head: auto (where it measured faster: see `use_compile` in
    # device.py), on, off
    compile: str = "auto"
    head: bool = True  # train the linear classifier on neutral-label activities (loeweX)
    head_lr: float = 1e-2
    head_weight_decay: float = 3e-3
    seed: int = 0
    seeds: int = 1  # number of independent networks, seeds seed .. seed+seeds-1, trained side by side
    device: str = "auto"  # auto: cuda, else mps, else cpu
    deterministic: bool = False  # torch's deterministic kernels (GPU runs: bit-identical reruns, somewhat slower)
    eval_batch_size: int = 1000  # images per evaluation batch at most (lowered to bound memory, see train.py)
    train_metrics: bool = True  # accumulate per-layer metrics over training batches
    # Sub-epoch probes: layer metrics on the first `probe_size` validation images at step 0 and
    # `probes_per_epoch` times per epoch during the first `probe_epochs` epochs, then at every epoch end
    # (split "probe", fractional epochs): when each layer reaches a level, at sub-epoch resolution.
    probes_per_epoch: int = 0
    probe_epochs: int = 3
    probe_size: int = 1000


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""

    def depth(self) -> int:
        """Number of FF layers (blocks, for conv architectures)."""
        m = self.model
        return len(m.hidden) if m.architecture == "fc" else len(CONV_ARCHITECTURES[m.architecture][0])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        cfg = cls()
        merge(cfg, data)
        return cfg

    def validate(self) -> "RunConfig":
        for key, allowed in CHOICES.items():
            value = get_path(self, key)
            if value not in allowed:
                raise ConfigError(f"{key} = {value!r} is not one of {', '.join(allowed)}")
        m, t = self.model, self.train
        if not m.hidden or any(int(w) <= 0 for w in m.hidden):
            raise ConfigError(f"model.hidden = {m.hidden} must list one or more positive layer widths")
        check_ranges(self, RANGES)
        if t.schedule == "greedy" and t.epochs < self.depth():
            raise ConfigError(f"train.schedule = greedy trains one layer at a time: train.epochs = {t.epochs} leaves "
                              f"some of the {self.depth()} layers untrained; give at least {self.depth()} epochs")
        if t.autocast == "fp16" and t.seeds > 1:
            raise ConfigError("train.autocast = fp16 with several seeds would share one gradient scaler (one seed's "
                              "overflow skips every seed's step); use train.autocast = bf16, or train.seeds = 1")
        conv = m.architecture != "fc"
        if conv != (self.data.encoding == "channel"):
            raise ConfigError("conv architectures take the label as a learned input channel and FC ones as pixels: "
                              f"with model.architecture = {m.architecture!r} set data.encoding = "
                              f"{'channel' if conv else 'onehot'!r}")
        if conv and self.train.head:
            raise ConfigError("the linear head reads flat activities: set train.head = false for conv architectures")
        prefixes = sorted({int(d) for d in m.prefix_depths})
        if prefixes and (conv or t.schedule != "simultaneous" or prefixes[0] < 1 or prefixes[-1] >= self.depth()):
            raise ConfigError(f"model.prefix_depths = {m.prefix_depths}: prefixes are exact shallower networks only for "
                              f"FC layers under the simultaneous schedule, with depths from 1 to {self.depth() - 1}")
        m.prefix_depths = prefixes
        if m.classifier_layers == "all-but-first" and len(m.hidden) < 2 and not conv:
            m.classifier_layers = "all"  # one layer: nothing else to read
        return self


def merge(obj: Any, data: dict, prefix: str = "") -> None:
    """Set dataclass fields from a nested dict; unknown keys are an error (typos must not pass silently)."""
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {path!r}; known keys: {', '.join(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a table")
            merge(current, value, path + ".")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a table")
            current.update(value)
        else:
            setattr(obj, key, coerce(path, current, value))


# Fields that were booleans in saved configs of earlier versions: their old values, as now written.
FORMER_BOOLEANS = {"train.compile": {True: "on", False: "off", "true": "on", "false": "off"}}


def coerce(path: str, current: Any, value: Any) -> Any:
    """Convert a preset or CLI value to the type of the field's current value."""
    if path in FORMER_BOOLEANS:
        value = FORMER_BOOLEANS[path].get(value.lower() if isinstance(value, str) else value, value)
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, list):
            return parse_hidden(value) if path.endswith("hidden") else list(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path} = {value!r} is not a valid {type(current).__name__}") from None


def parse_hidden(spec: Any) -> list[int]:
    """'4x2000' -> [2000]*4; '500,500' -> [500, 500]; a list passes through."""
    if isinstance(spec, (list, tuple)):
        return [int(w) for w in spec]
    text = str(spec).replace(" ", "")
    try:
        if "x" in text:
            depth, width = text.split("x")
            return [int(width)] * int(depth)
        return [int(w) for w in text.split(",") if w]
    except ValueError:
        raise ConfigError(f"hidden = {spec!r}: write DEPTHxWIDTH (e.g. 4x2000) or widths (e.g. 500,500)") from None


def get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def parse_value(text: Any) -> Any:
    """A command-line value in TOML syntax (3, 1e-3, true, [1, 2], "x"), else the bare string: the one parser
    of --set and --analysis values."""
    if not isinstance(text, str):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def override(cfg: RunConfig, dotted: str, value: Any) -> None:
    """Apply one `section.key=value` override (values from the CLI are strings; TOML syntax is accepted)."""
    nested: Any = parse_value(value)
    for part in reversed(dotted.split(".")):
        nested = {part: nested}
    merge(cfg, nested)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def find_preset(name: str, folder: str = "models") -> Path:
    """A preset is a TOML file path, or a name looked up in ./models/ and then in the repository's models/."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    for base in (Path.cwd() / folder, repo_root() / folder):
        candidate = base / f"{name}.toml"
        if candidate.is_file():
            return candidate
    available = sorted({p.stem for base in (Path.cwd() / folder, repo_root() / folder) if base.is_dir()
                        for p in base.glob("*.toml")})
    raise ConfigError(f"preset {name!r} not found; available: {', '.join(available) or 'none'} "
                      f"(or pass a path to a .toml file)")


def load_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def load_preset(name: str) -> RunConfig:
    path = find_preset(name)
    data = load_toml(path)
    data.pop("description", None)
    try:  # a preset must be valid on its own: errors name the file
        cfg = RunConfig.from_dict(data).validate()
    except ConfigError as exc:
        raise ConfigError(f"preset {path}: {exc}; fix the file or choose another --preset") from None
    if not cfg.name:
        cfg.name = path.stem
    return cfg


def dumps(cfg: RunConfig) -> str:
    return tomli_w.dumps(cfg.to_dict())
