"""Where a study's work units run: one `concurrent.futures`-style interface, three engines.

    in-process  (default)  units run one after another in this process; nothing to install
    process     --workers N: a local pool of N spawned processes, each with cpu_count / N torch threads
    ray         --executor ray [--ray-address ADDR] [--gpus-per-cell F]: Ray tasks on a local or remote
                cluster, packed fractionally onto GPUs (pip install 'ffhw[ray]')

An executor has `slots` (how many units the runner keeps in flight), `submit(fn, spec) -> Future` and
`shutdown()`. Retries and the bookkeeping of finished cells live in the study runner, the same for every
engine; Ray additionally re-runs tasks whose worker died (node loss, pre-emption) up to `max_retries`.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time

from .errors import ConfigError

EXECUTORS = ("in-process", "process", "ray")
RAY_STORAGES = ("driver", "shared")  # where Ray workers write records (see RayExecutor)


class InProcessExecutor:
    """Runs each unit at submit time, in this process (the runner submits one at a time)."""
    name = "in-process"
    slots = 1
    writes_locally = True  # units write their records straight into the study directory

    def submit(self, fn, spec) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(spec))
        except BaseException as exc:  # noqa: BLE001 - handed to the runner like any executor's failure
            if isinstance(exc, KeyboardInterrupt):
                raise
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # the runner is gone: nobody will collect this unit, so stop using the CPU


def _init_worker(threads: int, parent: int) -> None:
    import torch
    torch.set_num_threads(threads)
    # a pool worker busy in a unit never reads its queue, so without this it outlives a killed runner
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


class ProcessExecutor:
    """A pool of spawned worker processes on this machine; threads are split so workers do not oversubscribe."""
    name = "process"
    writes_locally = True

    def __init__(self, workers: int):
        if workers < 1:
            raise ConfigError(f"--workers {workers}: give at least 1 worker process")
        self.slots = workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_init_worker, initargs=(threads, os.getpid()))

    def submit(self, fn, spec) -> cf.Future:
        return self.pool.submit(fn, spec)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray tasks. `storage="driver"` (default): workers train in a temporary directory and return the
    records, which the driver writes, so no shared filesystem is needed. `storage="shared"`: workers write
    into the study directory themselves (it must be on a filesystem every node mounts at the same path),
    which also lets a re-run unit continue from its last epoch checkpoint."""
    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_cell: float = 0.0, cpus_per_cell: float = 1.0,
                 max_retries: int = 2, storage: str = "driver"):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'ffhw[ray]'") from None
        if storage not in RAY_STORAGES:
            raise ConfigError(f"--ray-storage {storage!r}: use {' or '.join(RAY_STORAGES)}")
        if gpus_per_cell < 0 or cpus_per_cell <= 0:
            raise ConfigError("--gpus-per-cell must be >= 0 and --cpus-per-cell > 0")
        self.ray = ray
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            # Workers must import this package: ship the working directory unless it is installed everywhere.
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.writes_locally = storage == "shared"
        # Ray hides GPUs from a task without a GPU share, so such a cell runs on the CPU whatever it asks for
        self.device_type = "cuda" if gpus_per_cell > 0 else "cpu"
        self.remote_options = dict(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=max_retries,
                                   retry_exceptions=False)
        total = ray.cluster_resources()
        per = [total.get("CPU", 1) / cpus_per_cell]
        if gpus_per_cell > 0:
            per.append(total.get("GPU", 0) / gpus_per_cell)
        self.slots = max(1, int(min(per)))
        self._tasks: dict = {}

    def submit(self, fn, spec) -> cf.Future:
        task = self._tasks.get(fn)
        if task is None:
            task = self._tasks[fn] = self.ray.remote(**self.remote_options)(fn)
        return task.remote(spec).future()

    def shutdown(self) -> None:
        if self.owns_ray:
            self.ray.shutdown()


def make_executor(name: str, workers: int = 1, ray_address: str | None = None, gpus_per_cell: float = 0.0,
                  cpus_per_cell: float = 1.0, retries: int = 2, ray_storage: str = "driver"):
    if name == "in-process":
        return InProcessExecutor()
    if name == "process":
        return ProcessExecutor(workers)
    if name == "ray":
        return RayExecutor(ray_address, gpus_per_cell, cpus_per_cell, retries, ray_storage)
    raise ConfigError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")
