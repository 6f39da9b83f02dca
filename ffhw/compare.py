"""`python -m ffhw.run compare`: train several layer types on the same architecture, data order and seed,
and print one table. Each variant is an ordinary run directory under the comparison directory, so an
interrupted comparison resumes (finished variants are kept, a half-trained one continues from its last
epoch) and the table is rebuilt from the saved records alone (`--report DIR`).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import find_preset, load_toml, merge
from .errors import ConfigError
from .layers import get_layer_type
from .records import RunDir, atomic_write


def load_variants(path: str) -> dict[str, dict]:
    definition = load_toml(find_preset(path, folder="experiments"))
    variants = definition.get("variants", {})
    if not variants:
        raise ConfigError(f"{path}: no [variants.NAME] tables")
    return variants


def run_variants(base, variants: dict[str, dict], root: Path, quiet: bool) -> None:
    from .run import train

    console = Console()
    for i, (name, overrides) in enumerate(variants.items(), 1):
        cfg = copy.deepcopy(base)
        cfg.model.layer = {}
        merge(cfg, overrides)
        cfg.name = name
        cfg.validate()
        path = root / name
        done = RunDir(path).read_summary().get("status") == "complete" if path.exists() else False
        if done:
            console.print(f"[{i}/{len(variants)}] {name}: complete, kept")
            continue
        console.print(f"[{i}/{len(variants)}] {name}")
        resume = (path / "checkpoint.pt").exists()
        train(RunDir.open(path).config() if resume else cfg, path, quiet, resume=resume)


def collect(root: Path) -> list[dict]:
    """One entry per variant, from its summary.json and metrics.csv only."""
    entries = []
    saved = root / "variants.toml"  # the definitions this comparison ran, in their order
    order = list(load_toml(saved).get("variants", {})) if saved.exists() else []
    paths = [p for p in root.iterdir() if (p / "summary.json").exists()]
    for path in sorted(paths, key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name)):
        run = RunDir(path)
        summary, rows = run.read_summary(), run.read_metrics()
        cfg = run.config()
        final = max((r["epoch"] for r in rows if r["split"] == "test"), default=None)

        def mean_of(split, layer, metric):
            vals = [r["value"] for r in rows if r["split"] == split and r["layer"] == layer and r["metric"] == metric
                    and (split != "test" or r["epoch"] == final)]
            return sum(vals) / len(vals) if vals else None

        layers = sorted({r["layer"] for r in rows if r["layer"] != "net"}, key=int)
        layer_type = get_layer_type(cfg.model.layer_type, conv=cfg.model.architecture != "fc")
        numbers = layer_type.describe(layer_type.resolve_options(dict(cfg.model.layer)))
        entries.append({
            "variant": path.name, "layer_type": cfg.model.layer_type, "status": summary.get("status"),
            "hidden": cfg.model.hidden, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
            "test_acc_goodness": mean_of("test", "net", "acc_goodness"), "test_acc_head": mean_of("test", "net", "acc_head"),
            "test_layer_acc10": [mean_of("test", k, "layer_acc10") for k in layers],
            "test_layer_acc": [mean_of("test", k, "layer_acc") for k in layers],
            "parameters": summary.get("parameters_per_seed"),
            "deployed_weight_bytes": summary.get("deployed_weight_bytes_per_seed"),
            "weight_bits": numbers["weight_bits"], "act_bits": numbers["act_bits"], "steps": numbers["steps"],
            "numbers": numbers["label"],
            "spike_rate": (sum(v for v in (mean_of("test", k, "spike_rate") for k in layers) if v is not None) / len(layers)
                           if any(mean_of("test", k, "spike_rate") is not None for k in layers) else None),
            "sparsity": [mean_of("test", k, "sparsity") for k in layers],
            "train_seconds": summary.get("train_seconds"),
        })
    return entries


def table(entries: list[dict]) -> Table:
    t = Table(title="layer types side by side (test set)", title_justify="left")
    for col in ("variant", "test acc (goodness)", "test acc (head)", "per-layer 10-way acc", "params",
                "weight bytes", "bits w/a", "spike rate", "train s"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
    for e in entries:
        bits = e["numbers"]
        t.add_row(e["variant"] + ("" if e["status"] == "complete" else f" ({e['status']})"),
                  fmt(e["test_acc_goodness"], "{:.4f}"), fmt(e["test_acc_head"], "{:.4f}"),
                  " ".join(fmt(v, "{:.3f}") for v in e["test_layer_acc10"]),
                  fmt(e["parameters"], "{:,}"), fmt(e["deployed_weight_bytes"], "{:,.0f}"), bits,
                  fmt(e["spike_rate"], "{:.3f}"), fmt(e["train_seconds"], "{:.0f}"))
    return t


def report(root: Path) -> list[dict]:
    entries = collect(root)
    if not entries:
        raise ConfigError(f"{root} holds no finished variant runs")
    atomic_write(root / "comparison.json", json.dumps(entries, indent=2) + "\n")
    Console().print(table(entries))
    return entries


def main(argv: list[str]) -> int:
    from .run import add_config_flags, build_config

    p = argparse.ArgumentParser(prog="python -m ffhw.run compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p)
    p.add_argument("--variants", default="compare", help="variant definitions: a name in experiments/ or a .toml path")
    p.add_argument("--only", help="comma-separated subset of the variants to run")
    p.add_argument("--out", default="runs", help="parent directory (default runs/)")
    p.add_argument("--name", help="comparison directory name (default compare-<time>); an existing one is resumed")
    p.add_argument("--report", metavar="DIR", help="only rebuild the table of a finished comparison from its records")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        report(Path(args.report))
        return 0
    if args.layer_type:
        raise ConfigError("compare trains every layer type in --variants; drop --layer-type")
    base = build_config(args)
    variants = load_variants(args.variants)
    if args.only:
        wanted = [v.strip() for v in args.only.split(",")]
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; defined: {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in wanted}
    from .config import safe_component
    from .records import make_dir
    root = make_dir(Path(args.out) / safe_component(args.name or f"compare-{time.strftime('%Y%m%d-%H%M%S')}", "--name"),
                    "comparison directory")
    import tomli_w
    saved = root / "variants.toml"  # a comparison grown by several --only runs keeps every definition it ran
    earlier = load_toml(saved).get("variants", {}) if saved.exists() else {}
    atomic_write(saved, tomli_w.dumps({"variants": {**earlier, **variants}}))
    run_variants(base, variants, root, args.quiet)
    report(root)
    return 0
