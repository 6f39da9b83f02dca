"""Shared fixtures. Tests that need real data read it from $FFHW_DATA; .ci/run sets it, and when it is unset
the shared data directory beside the checkout is used if it exists."""
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("FFHW_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["FFHW_DATA"] = str(REPO.parent / "shared" / "data")

# Test-only layer types (tests/layers/type_*.py) register themselves before any test module lists the
# registered types, so each one gets the whole layer contract.
for _path in sorted((REPO / "tests" / "layers").glob("type_*.py")):
    _spec = importlib.util.spec_from_file_location(f"ffhw_test_{_path.stem}", _path)
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = Path(os.environ.get("FFHW_DATA", ""))
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("real MNIST not found: set FFHW_DATA to a directory holding MNIST/raw/*.gz")
    return root


@pytest.fixture(scope="session")
def mnist_small(mnist_root):
    """Real MNIST on the CPU: 3000 training images, 1000 validation images, the full test set."""
    from ffhw import data
    return data.load("mnist", mnist_root, "cpu", val_size=1000, train_subset=3000)


def small_config(layer_type="standard", hidden=(200, 200), epochs=2, **train):
    from ffhw.config import RunConfig
    cfg = RunConfig(name="test")
    cfg.model.layer_type, cfg.model.hidden = layer_type, list(hidden)
    cfg.data.val_size, cfg.data.train_subset = 1000, 3000
    cfg.train.epochs, cfg.train.batch_size, cfg.train.optimizer, cfg.train.lr = epochs, 100, "adam", 1e-3
    cfg.train.lr_schedule = "constant"
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def conv_config(layer_type="standard", options=None, block_norm="batch", epochs=2, **train):
    cfg = small_config(layer_type, epochs=epochs, head=False, **train)
    cfg.model.architecture, cfg.model.width_scale, cfg.model.block_norm = "small", 1 / 16, block_norm
    cfg.model.goodness, cfg.model.loss, cfg.model.peer_norm = "mean", "symba", 0.0  # Trifecta: SymBa, mean goodness
    cfg.model.classifier_layers = "all"
    cfg.model.layer = options or {}
    cfg.data.encoding = "channel"
    return cfg.validate()


@pytest.fixture(scope="session")
def mnist_conv(mnist_small):
    """mnist_small with 500-image validation and test splits: conv blocks evaluate every label through every block."""
    from ffhw.data import Data, Split
    d = mnist_small
    return Data(d.name, d.train, Split(d.val.x[:500], d.val.y[:500]), Split(d.test.x[:500], d.test.y[:500]),
                d.num_classes)


# ---- studies ----
def records(root):
    """Every cell's rows without wall-clock measurements, keyed by cell."""
    from ffhw.metrics import TIMING_METRICS
    from ffhw.records import load_cells
    return {c["cell"]: [(r["seed"], r["epoch"], r["split"], r["layer"], r["metric"], r["value"])
                        for r in c["rows"] if r["metric"] not in TIMING_METRICS] for c in load_cells(root)}


def run_tiny(root, executor=None, definition="depth-correlation", **kw):
    from ffhw.executors import InProcessExecutor
    from ffhw.runner import StudyRunner
    from ffhw.study import Study
    study = Study.load(definition, "tiny", "standard")
    return StudyRunner(study, root, executor or InProcessExecutor(), quiet=True, **kw).run()


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """The tiny depth/correlation grid run once, in-process, uninterrupted: the reference records."""
    root = tmp_path_factory.mktemp("study") / "tiny"
    run_tiny(root)
    return root


