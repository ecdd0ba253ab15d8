"""``sned study --jobs N``: the study's (run, seed) trainings in N worker processes.

Each worker is a spawned process with its own :class:`~sned.app.study.Evaluator` and
``max(1, cores // N)`` torch threads (``OMP_NUM_THREADS`` wins when set), so two 1-thread runs
side by side use a 2-core machine about twice as well as one 2-thread run (tiny convolutions
scale poorly over threads; ``benchmarks/bench_study_throughput.py`` measures it). Every run
writes only its own folder (``runs/<run>/seed<k>/``), so workers never share a file; results
are put back in the sequential order, so ``results.json`` does not depend on N.

Workers die with their parent: each watches its parent pid and, when the parent is gone (a
``kill -9``), stops itself (SIGTERM: a training run saves its checkpoint at the end of the
step) and exits within :data:`GRACE_SECONDS`. A study folder has one owner at a time
(:func:`study_lock`): the study holds ``.study.lock`` exclusively and, with its workers,
``.study.workers.lock`` shared, so a rerun cannot start beside a live study nor beside live
workers of a dead one. ``N`` is capped to the CPU cores (:func:`cap_jobs`).
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import torch

from ..config import ConfigError
from ..store.files import pid_alive

try:
    import fcntl
except ImportError:  # not POSIX: no study lock (workers still watch their parent)
    fcntl = None

GRACE_SECONDS = 5.0
"""How long a worker whose parent died may take to save its run before it exits."""
OWNER, WORKERS = ".study.lock", ".study.workers.lock"

Task = tuple[tuple, object, int]
"""``(order key, RunSpec, seed)``: the key sorts records as the sequential study would."""

_WORKER: dict = {}


def _init(make_evaluator: Callable, run_task: Callable, threads: int, parent: int,
          lock_dir: str | None = None) -> None:
    _watch_parent(parent)
    if lock_dir is not None:
        _WORKER["lock"] = _share_workers_lock(Path(lock_dir))
    torch.set_num_threads(threads)
    _WORKER.update(evaluator=make_evaluator(), run_task=run_task)


def _watch_parent(parent: int, poll: float = 0.25) -> threading.Thread:
    """A daemon thread: when this process's parent is no longer ``parent`` (it died and the
    process was re-parented), SIGTERM this process (a run saves and stops), then exit after
    :data:`GRACE_SECONDS` whatever it is doing — never blocking on the dead parent's pipe."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        print(f"sned study worker {os.getpid()}: the study process {parent} is gone; "
              f"stopping", file=sys.stderr, flush=True)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            time.sleep(GRACE_SECONDS)
            os._exit(1)

    thread = threading.Thread(target=watch, name="sned-parent-watch", daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- the study lock
@contextmanager
def study_lock(out: Path) -> Iterator[Path | None]:
    """Hold the study folder ``out`` for this process (and, through :func:`run_in_workers`,
    its workers). ConfigError naming the owner's pid when another study — or a worker of a
    study whose parent died — still holds it. Locks go with their process: no stale lock."""
    if fcntl is None:
        yield None
        return
    out.mkdir(parents=True, exist_ok=True)
    owner = os.open(out / OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    workers = None
    try:
        if not _try_lock(owner, fcntl.LOCK_EX):
            pid = os.pread(owner, 64, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"study: {out} is in use by the study process {pid} (it holds "
                              f"{out / OWNER}); wait for it to finish or stop it, then rerun")
        workers = os.open(out / WORKERS, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(workers, fcntl.LOCK_EX):
            pids = _pids(out / WORKERS)
            raise ConfigError(f"study: worker process(es) {', '.join(pids) or '?'} of an "
                              f"earlier study of {out} still run (their parent is gone; they "
                              f"stop within {GRACE_SECONDS:g} s of noticing); rerun when they "
                              f"have exited")
        os.ftruncate(owner, 0)
        os.pwrite(owner, f"{os.getpid()}\n".encode(), 0)
        os.ftruncate(workers, 0)
        fcntl.flock(workers, fcntl.LOCK_SH)  # the owner's exclusive lock keeps others out
        yield out
    finally:
        for fd in (workers, owner):
            if fd is not None:
                os.close(fd)  # releases the lock


def _try_lock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _pids(path: Path) -> list[str]:
    try:
        found = path.read_text().split()
    except OSError:
        return []
    return [p for p in found if p.isdigit() and pid_alive(int(p))]


def _share_workers_lock(folder: Path) -> int | None:
    """A worker's shared hold of ``folder/.study.workers.lock`` (its pid appended)."""
    if fcntl is None:
        return None
    fd = os.open(folder / WORKERS, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def cap_jobs(jobs: int) -> int:
    """``jobs`` capped to the CPU cores this process may use (a note when capped): more
    workers than cores only add memory and contention."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if jobs > cores:
        print(f"sned study: note: --jobs {jobs} is more than the {cores} CPU core(s); "
              f"running {cores} job(s)", file=sys.stderr, flush=True)
        return cores
    return jobs


def _job(spec, seed: int) -> dict:
    return _WORKER["run_task"](spec, seed, _WORKER["evaluator"])


def _describe(describe: Callable):
    return describe(_WORKER["evaluator"])


def threads_per_job(jobs: int) -> int:
    """Torch threads of one worker: ``OMP_NUM_THREADS`` if set, else cores // jobs."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 1) // jobs)


def run_in_workers(jobs: int, tasks: Iterable[Task],
                   follow_up: Callable[[Task, dict], list[Task]], make_evaluator: Callable,
                   run_task: Callable, describe: Callable, lock_dir: Path | None = None):
    """Run ``tasks`` on ``jobs`` workers. Each worker builds its evaluator once
    (``make_evaluator()``) and runs a task as ``run_task(spec, seed, evaluator)`` → record;
    ``follow_up(task, record)`` may add tasks once one finishes (the matched-compute run needs
    its supernet's compute). The callables must pickle (module-level functions, partials).
    Tasks start in order-key order (follow-ups included), ``jobs`` at a time.
    Returns the records in order-key order and ``describe(evaluator)`` of one worker.

    Ctrl-C reaches every worker (one process group): each saves its run and stops; the
    exception is raised here after they have, so a rerun resumes every unfinished run.
    Workers stop by themselves when this process dies; with ``lock_dir`` (a folder held by
    :func:`study_lock`) each also holds its workers' lock while it lives.
    """
    ctx = mp.get_context("spawn")  # no fork of a process that may hold CUDA or OpenMP state
    done: list[tuple[tuple, dict]] = []
    ticket = itertools.count()  # ties broken by arrival; specs are never compared
    queue = [(key, next(ticket), spec, seed) for key, spec, seed in tasks]
    heapq.heapify(queue)  # by order key: a follow-up runs before the tasks ordered after it
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(
            make_evaluator, run_task, threads_per_job(jobs), os.getpid(),
            None if lock_dir is None else str(lock_dir))) as pool:
        note = pool.submit(_describe, describe)
        pending: dict[Future, Task] = {}

        def submit() -> None:  # at most ``jobs`` tasks handed to the pool at a time
            while queue and len(pending) < jobs:
                key, _, spec, seed = heapq.heappop(queue)
                pending[pool.submit(_job, spec, seed)] = (key, spec, seed)

        submit()
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    record = fut.result()
                    done.append((task[0], record))
                    for key, spec, seed in follow_up(task, record):
                        heapq.heappush(queue, (key, next(ticket), spec, seed))
                submit()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        info = note.result()
    return [r for _, r in sorted(done, key=lambda kr: kr[0])], info
