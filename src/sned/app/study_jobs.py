"""``sned study --jobs N``: the study's (run, seed) trainings in N worker processes.

Each worker is a spawned process with its own :class:`~sned.app.study.Evaluator` and
``max(1, cores // N)`` torch threads (``OMP_NUM_THREADS`` wins when set), so two 1-thread runs
side by side use a 2-core machine about twice as well as one 2-thread run (tiny convolutions
scale poorly over threads; ``benchmarks/bench_study_throughput.py`` measures it). Every run
writes only its own folder (``runs/<run>/seed<k>/``), so workers never share a file; results
are put back in the sequential order, so ``results.json`` does not depend on N.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import torch

Task = tuple[tuple, object, int]
"""``(order key, RunSpec, seed)``: the key sorts records as the sequential study would."""

_WORKER: dict = {}


def _init(make_evaluator: Callable, run_task: Callable, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(evaluator=make_evaluator(), run_task=run_task)


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
                   run_task: Callable, describe: Callable):
    """Run ``tasks`` on ``jobs`` workers. Each worker builds its evaluator once
    (``make_evaluator()``) and runs a task as ``run_task(spec, seed, evaluator)`` → record;
    ``follow_up(task, record)`` may add tasks once one finishes (the matched-compute run needs
    its supernet's compute). The callables must pickle (module-level functions, partials).
    Returns the records in order-key order and ``describe(evaluator)`` of one worker.

    Ctrl-C reaches every worker (one process group): each saves its run and stops; the
    exception is raised here after they have, so a rerun resumes every unfinished run.
    """
    ctx = mp.get_context("spawn")  # no fork of a process that may hold CUDA or OpenMP state
    done: list[tuple[tuple, dict]] = []
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(
            make_evaluator, run_task, threads_per_job(jobs))) as pool:
        note = pool.submit(_describe, describe)
        pending: dict[Future, Task] = {}
        for key, spec, seed in tasks:
            pending[pool.submit(_job, spec, seed)] = (key, spec, seed)
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    record = fut.result()
                    done.append((task[0], record))
                    for key, spec, seed in follow_up(task, record):
                        pending[pool.submit(_job, spec, seed)] = (key, spec, seed)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        info = note.result()
    return [r for _, r in sorted(done, key=lambda kr: kr[0])], info
