"""The Python API, for notebooks and scripts (also importable from the package root):

    import ffhw
    cfg = ffhw.make_config("quick", {"train.epochs": 3, "model.hidden": [500, 500]})
    run = ffhw.fit(cfg, out="runs", name="quick-500")
    run.dataframe().query("split == 'val' and layer == 'net'")   # or run.rows without pandas
    model = run.model()
    ffhw.export_bundle(run.path)
    study = ffhw.run_study("depth-correlation", grid="tiny")

Everything goes through the same code as the command line and writes the same records.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, load_preset, override


def make_config(preset: str | None = None, overrides: dict | None = None, layer_type: str | None = None) -> RunConfig:
    """A checked RunConfig: a preset (a name in models/ or a .toml path; default: the layer type's own preset,
    else the defaults) with overrides by dotted path, e.g. {"train.epochs": 3, "model.layer.steps": 4}."""
    from .errors import ConfigError
    name = preset or layer_type or "standard"
    try:
        cfg = load_preset(name)
    except ConfigError:
        if preset:
            raise
        cfg = RunConfig(name=name)
    if layer_type and layer_type != cfg.model.layer_type:
        cfg.model.layer_type, cfg.model.layer = layer_type, {}
    for key, value in (overrides or {}).items():
        override(cfg, key, value)
    return cfg.validate()


@dataclass
class Run:
    """A run directory's records: config, summary, rows; the trained model on demand."""
    path: Path

    @property
    def config(self) -> RunConfig:
        from .records import RunDir
        return RunDir.open(self.path).config()

    @property
    def summary(self) -> dict:
        from .records import RunDir
        return RunDir.open(self.path).read_summary()

    @property
    def rows(self) -> list[dict]:
        """Tidy metrics: dicts of seed, epoch, split, layer ("0".. or "net"), metric, value."""
        from .records import RunDir
        return RunDir.open(self.path).read_metrics()

    def dataframe(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            from .errors import ConfigError
            raise ConfigError("Run.dataframe needs pandas (pip install pandas); Run.rows gives the same rows as dicts") from None
        return pd.DataFrame(self.rows)

    def model(self, device: str = "cpu"):
        """The trained network (FFNet), in eval mode."""
        from .model import load_model
        return load_model(self.path, device)[0]


def fit(cfg: RunConfig, out: str | Path = "runs", name: str | None = None, quiet: bool = True) -> Run:
    """Train `cfg` into a new run directory <out>/<name> (default: preset name and time stamp)."""
    from .run import new_run_dir, train
    path = new_run_dir(str(out), name, cfg)
    train(cfg.validate(), path, quiet)
    return Run(path)


def load_run(path: str | Path) -> Run:
    from .records import RunDir
    return Run(RunDir.open(Path(path)).path)


def run_study(study: str, grid: str = "cpu", layer_type: str = "standard", out: str | Path = "runs",
              sets: list[str] | None = None, quiet: bool = True) -> dict:
    """Run (or resume) a study in-process and analyse it; returns the analysis (also in <dir>/analysis.json)."""
    from .executors import InProcessExecutor
    from .runner import StudyRunner, analyze, default_dir
    from .study import Study
    definition = Study.load(study, grid, layer_type, sets)
    root = default_dir(str(out), definition)
    StudyRunner(definition, root, InProcessExecutor(), quiet=quiet).run()
    return analyze(root, quiet=quiet)


def export_bundle(run_dir: str | Path, out: str | Path = "export", **options) -> Path:
    """Per-layer ONNX bundle of a run, parity-checked (options as ffhw.export.export_run)."""
    from .export import export_run
    return export_run(run_dir, out, log=lambda *a: None, **options)
