"""Executors: a local process pool and a real local Ray instance give the in-process records."""
import pytest

from ffhw.executors import ProcessExecutor
from conftest import records, run_tiny


def test_process_pool_gives_the_same_records(uninterrupted, tmp_path):
    executor = ProcessExecutor(2)
    try:
        run_tiny(tmp_path / "pool", executor)
    finally:
        executor.shutdown()
    assert records(tmp_path / "pool") == records(uninterrupted)


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'ffhw[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("storage", ["driver", "shared"])
def test_ray_gives_the_same_records(ray_session, uninterrupted, tmp_path, storage):
    from ffhw.executors import RayExecutor
    run_tiny(tmp_path / storage, RayExecutor(storage=storage))
    assert records(tmp_path / storage) == records(uninterrupted)


def test_ray_failing_cell_is_retried_and_reported(ray_session, tmp_path):
    from ffhw.executors import RayExecutor
    from ffhw.records import load_cells
    from ffhw.runner import StudyRunner
    from ffhw.study import Study
    from ffhw.config import load_toml, find_preset

    definition = load_toml(find_preset("depth_correlation", "experiments"))
    definition["grids"]["broken"] = {**definition["grids"]["tiny"], "factors": {
        "depth": [2], "width": [16], "data.val_size": [1000, 70000]}, "seeds": 1}  # 70000: fails only on loading
    study = Study(definition, "broken", "standard", source="broken.toml")
    result = StudyRunner(study, tmp_path / "b", RayExecutor(), retries=1, quiet=True).run()
    assert result["counts"] == {"complete": 1, "failed": 1}
    failed = [c for c in load_cells(tmp_path / "b") if c["status"] == "failed"]
    assert "val_size = 70000" in failed[0]["error"]
