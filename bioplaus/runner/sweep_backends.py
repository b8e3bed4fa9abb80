"""Where a sweep's runs execute: the caller's process, a local process pool, or a Ray cluster.

Every backend calls [`execute`][bioplaus.runner.sweep_run.execute] once per run and hands each
finished run's status record to ``on_result`` as soon as it arrives.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bioplaus.errors import BioplausError, ConfigError
from bioplaus.runner.ray_session import start_or_join
from bioplaus.runner.store import Store, now
from bioplaus.runner.sweep_run import RunTask, execute

OnResult = Callable[[dict[str, Any]], None]
PRELOAD = ["__main__", "bioplaus.runner.sweep_run", "torch._dynamo", "sklearn.datasets"]
BACKENDS = ("local", "ray")
WORKER_DIED = (
    "the worker process died while running it (killed, out of memory, or a crash in native code); "
    "rerun the sweep with --retry-failed"
)


def run_serial(tasks: Sequence[RunTask], on_result: OnResult) -> None:
    """Run every task in this process, one after the other."""
    for task in tasks:
        on_result(execute(task))


def run_local(tasks: Sequence[RunTask], workers: int, on_result: OnResult) -> None:
    """Run the tasks in a pool of ``workers`` fresh processes (see
    [`pool_context`][bioplaus.runner.sweep_backends.pool_context]).

    If a worker dies (killed, out of memory), the runs it had in flight are marked failed and
    the rest go on in a new pool.
    """
    if workers == 1 or len(tasks) <= 1:
        run_serial(tasks, on_result)
        return
    remaining = list(tasks)
    while remaining:
        unstarted = _run_pool(remaining, min(workers, len(remaining)), on_result)
        if len(unstarted) == len(remaining):
            raise BioplausError(
                "the sweep's worker processes died before starting any run (their errors are printed above). "
                "A script that starts a local pool must be a file whose sweep call sits under "
                "'if __name__ == \"__main__\":'; or use workers=1"
            )
        remaining = unstarted


def pool_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where the platform has it, else ``spawn``; never a plain fork of a process running torch.

    The fork server imports bioplaus and torch once, with the modules that a run would
    otherwise import on its own first use (torch's optimizers import ``torch._dynamo``; the
    digits task imports scikit-learn's data sets), so each worker starts in milliseconds,
    ready to train. It also runs the main script's top level, as ``spawn`` does, so rules
    registered there are known to the workers.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _run_pool(tasks: list[RunTask], workers: int, on_result: OnResult) -> list[RunTask]:
    """Run tasks until done or the pool breaks; return those that never started."""
    context = pool_context()
    broken: list[RunTask] = []
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_watch_parent) as pool:
        futures: dict[Future[dict[str, Any]], RunTask] = {pool.submit(execute, task): task for task in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    on_result(future.result())
                except BrokenProcessPool:
                    broken.append(futures[future])
    unstarted = []
    for task in broken:
        if (Store(task.root).run(task.run_id).status() or {}).get("status") == "running":
            on_result(_mark_failed(task, WORKER_DIED))
        else:
            unstarted.append(task)
    return unstarted


def _watch_parent() -> None:
    """Pool-worker initializer: exit at once when the sweep's process dies (e.g. SIGKILL), not after the run."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - only called in pool workers
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="bioplaus-parent-watch").start()


def import_ray() -> Any:
    """The ``ray`` module, or a ``ConfigError`` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray backend needs Ray, which is not installed: pip install 'bioplaus[ray]' (or pip install ray)"
        ) from None
    return ray


def run_ray(tasks: Sequence[RunTask], on_result: OnResult, address: str | None, workers: int) -> None:
    """Run each task as a Ray task (one CPU per torch thread; one GPU for runs on CUDA).

    Joins a running Ray session if this process has one, else connects to ``address``
    (``auto``, ``ray://host:10001``, …; a cluster that does not answer within a few seconds is a
    ``ConfigError``) or, with no address, starts a local Ray instance with ``workers`` CPUs that is
    shut down at the end (see `bioplaus.runner.ray_session.start_or_join`). The results
    directory must be on a file system that every node sees.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        start_or_join(ray, address, workers)
    try:
        remote = ray.remote(execute)
        refs = {
            remote.options(
                num_cpus=task.threads, num_gpus=1 if str(task.config["device"]).startswith("cuda") else 0
            ).remote(task): task
            for task in tasks
        }
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    on_result(ray.get(ref))
                except ray.exceptions.RayError as err:  # the worker died; errors inside a run are results
                    on_result(_mark_failed(refs[ref], f"Ray task failed: {err}"))
    finally:
        if started:
            ray.shutdown()


def _mark_failed(task: RunTask, message: str) -> dict[str, Any]:
    run = Store(task.root).run(task.run_id)
    record = {**(run.status() or {"run_id": task.run_id}), "status": "failed", "message": message, "finished": now()}
    run.write_status(record)
    return record
