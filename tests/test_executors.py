"""Executors: a local process pool and a real local Ray instance give the in-process records."""
import os
import signal
import subprocess
import sys
import time

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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped running
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker state from /proc")
def test_pool_workers_stop_when_the_runner_is_killed():
    # the runner process starts a pool, a worker takes a long unit, then the runner dies by SIGKILL
    script = ("import time; from ffhw.executors import ProcessExecutor\n"
              "ex = ProcessExecutor(1); ex.submit(time.sleep, 120); time.sleep(3)\n"
              "print(*ex.pool._processes, flush=True); time.sleep(120)\n")
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in runner.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"pool workers {survivors} kept running after their runner was killed"


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
