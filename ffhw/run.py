"""Command line: `python -m ffhw.run [options]` (or `ffhw-run`) trains an FF network and writes a run directory.

    python -m ffhw.run                                  # standard layers, models/standard.toml
    python -m ffhw.run --layer-type spiking             # the spiking preset (models/spiking.toml)
    python -m ffhw.run --preset loewex-mnist --seeds 3  # a named preset, three seeds side by side
    python -m ffhw.run --resume runs/quick-20261122-101500
    python -m ffhw.run compare --hidden 2x500 --epochs 5   # standard vs 8/4-bit vs spiking, one table
    python -m ffhw.run study depth-correlation --layer-type spiking --grid cpu   # a study (see ffhw/study.py)

Options override the preset; `--set section.key=value` reaches any config field (see ffhw/config.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import CHOICES, RunConfig, get_path, load_preset, override, parse_hidden, safe_component
from .errors import ConfigError, FFHWError, run_cli

FLAG_FIELDS = {  # CLI flag -> config field
    "layer_type": "model.layer_type", "dataset": "data.dataset", "hidden": "model.hidden",
    "epochs": "train.epochs", "batch_size": "train.batch_size", "loss": "model.loss", "norm": "model.norm",
    "optimizer": "train.optimizer", "lr": "train.lr", "seed": "train.seed", "seeds": "train.seeds",
    "device": "train.device", "data_dir": "data.data_dir", "encoding": "data.encoding",
    "goodness": "model.goodness", "theta": "model.theta", "schedule": "train.schedule",
    "train_subset": "data.train_subset",
}


FLAG_HELP = {
    "dataset": "mnist, fashion-mnist, cifar10 or svhn",
    "hidden": "hidden layers: DEPTHxWIDTH (4x2000) or widths (500,500)",
    "theta": "threshold per unit (sum goodness: theta x width)",
    "norm": "normalisation of each layer's input", "encoding": "where the label is written",
    "seed": "first seed", "seeds": "number of seeds (networks trained side by side)",
    "train_subset": "train on the first N training samples only (0: all)",
    "device": "auto: cuda, else mps, else cpu",
    "data_dir": "data root (default: $FFHW_DATA, else ~/.cache/ffhw/data)",
}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per FLAG_FIELDS entry; choices and value types come from the config (CHOICES, defaults)."""
    from .layers import LAYER_TYPES

    g = p.add_argument_group("model and training (override the preset)")
    g.add_argument("--layer-type", choices=sorted(LAYER_TYPES), help="layer implementation (default standard)")
    g.add_argument("--preset", help="model preset: a name in models/ (e.g. quick, loewex-mnist) or a .toml path; "
                                    "default: the layer type's own preset")
    defaults = RunConfig()
    for flag, path in FLAG_FIELDS.items():
        if flag == "layer_type":
            continue
        kwargs = {"help": FLAG_HELP.get(flag)}
        default = get_path(defaults, path)
        if path in CHOICES:
            kwargs["choices"] = CHOICES[path]
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            kwargs["type"] = type(default)
        g.add_argument(f"--{flag.replace('_', '-')}", **kwargs)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set model.layer.steps=8 --set train.head=false")


def build_config(args: argparse.Namespace) -> RunConfig:
    preset = args.preset or args.layer_type or "standard"
    try:
        cfg = load_preset(preset)
    except ConfigError:
        if args.preset:
            raise
        cfg = RunConfig(name=preset)  # a layer type without its own preset: dataclass defaults
    if args.layer_type and args.layer_type != cfg.model.layer_type:
        cfg.model.layer_type, cfg.model.layer = args.layer_type, {}  # the preset's options were for another type
    for flag, path in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None and flag != "layer_type":
            override(cfg, path, parse_hidden(value) if flag == "hidden" else value)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set train.head=false")
        key, value = item.split("=", 1)
        override(cfg, key.strip(), value.strip())
    return cfg.validate()


def new_run_dir(out: str, name: str | None, cfg: RunConfig) -> Path:
    if name:
        return Path(out) / safe_component(name, "--name")
    stem = safe_component(Path(cfg.name).name or cfg.model.layer_type, "the preset name")
    return Path(out) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(cfg: RunConfig, run_path: Path | None, quiet: bool = False, resume: bool = False):
    """Load data, build the network, train, write records. Returns the summary dict."""
    from .data import load as load_data
    from .model import FFNet
    from .records import RunDir
    from .device import resolve_device
    from .train import Trainer
    from .ui import ConsoleUI

    device = resolve_device(cfg.train.device)
    d = load_data(cfg.data.dataset, cfg.data.data_dir or None, device, cfg.data.val_size, cfg.data.train_subset,
                      cfg.data.test_subset)
    model = FFNet(cfg, d.image_shape, d.num_classes).to(device)
    # Save the options as resolved (defaults filled in), so config.toml says exactly what ran.
    import dataclasses
    cfg.model.layer = dataclasses.asdict(model.options)
    run = None
    if run_path is not None:
        run = RunDir.open(run_path) if resume else RunDir.create(run_path, cfg)
    ui = None if quiet else ConsoleUI(title=f"ffhw: {cfg.model.layer_type} FF network {cfg.model.hidden} on "
                                            f"{d.name}, {cfg.train.seeds} seed(s), {device}"
                                            + (f" -> {run.path}" if run else ""))
    trainer = Trainer(cfg, d, model, device, run, ui)
    if ui and trainer.compiled:
        ui.title += "\nsteps compiled by torch.compile (train.compile): the first steps include compiling"
    if resume:
        state = run.load_checkpoint()
        if state is None:
            raise FFHWError(f"{run.path} has no checkpoint.pt to resume from; start a new run instead")
        trainer.load_state_dict(state, run.read_metrics())
        if trainer.resumed_from != device.type:
            print(f"warning: {run.path} was checkpointed on {trainer.resumed_from} and continues on {device.type}: "
                  f"random streams differ between device types, so the result will not equal an uninterrupted "
                  f"run (recorded in summary.json)", file=sys.stderr)
    try:
        return trainer.fit()
    finally:
        if ui:
            ui.close()


def train_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ffhw.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p)
    p.add_argument("--out", default="runs", help="parent directory of run directories (default runs/)")
    p.add_argument("--name", help="run directory name (default: preset name and time stamp)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last finished epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    args = p.parse_args(argv)
    if args.resume:
        from .records import RunDir
        given = [f"--{f.replace('_', '-')}" for f in (*FLAG_FIELDS, "preset") if getattr(args, f, None) is not None]
        if given or args.set:
            raise ConfigError(f"--resume continues with the run's saved config; drop {', '.join(given + ['--set'][:bool(args.set)])}")
        run_path = Path(args.resume)
        cfg = RunDir.open(run_path).config().validate()
        train(cfg, run_path, args.quiet, resume=True)
    else:
        cfg = build_config(args)
        train(cfg, new_run_dir(args.out, args.name, cfg), args.quiet)
    return 0


COMMANDS = {"compare": "ffhw.compare", "study": "ffhw.runner", "export": "ffhw.export", "bench": "ffhw.bench",
            "cost": "ffhw.hardware"}


def dispatch(argv: list[str]) -> int:
    try:
        if argv and argv[0] in COMMANDS:
            import importlib
            return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
        return train_main(argv)
    except KeyboardInterrupt:
        print("interrupted: finished epochs are saved; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_cli(dispatch, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
