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
from pathlib import Path

import torch

Task = tuple[tuple, object, int]
"""``(order key, RunSpec, seed)``: the key sorts records as the sequential study would."""

_EVALUATOR = None
_ARGS: tuple = ()


def _init(plan, caption_resolution: int, out: Path, device: str, i3d: str | None,
          threads: int) -> None:
    global _EVALUATOR, _ARGS
    from .study import Evaluator

    torch.set_num_threads(threads)
    _EVALUATOR = Evaluator(plan, caption_resolution, out, device, i3d)
    _ARGS = (plan, out, device)


def _job(spec, seed: int, resolutions: tuple[int, ...]) -> dict:
    from .study import _train_and_evaluate

    plan, out, device = _ARGS
    return _train_and_evaluate(plan, spec, seed, resolutions, device, out, _EVALUATOR)


def _note() -> tuple[str | None, int, int]:
    return _EVALUATOR.fvd_note, _EVALUATOR.caption_resolution, len(_EVALUATOR.prompts)


def threads_per_job(jobs: int) -> int:
    """Torch threads of one worker: ``OMP_NUM_THREADS`` if set, else cores // jobs."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 1) // jobs)


def run_in_workers(plan, resolutions: tuple[int, ...], device: str, out: Path,
                   i3d: str | None, jobs: int, tasks: Iterable[Task],
                   follow_up: Callable[[Task, dict], list[Task]]):
    """Run ``tasks`` on ``jobs`` workers; ``follow_up(task, record)`` may add tasks once one
    finishes (the matched-compute run needs its supernet's compute). Returns the records in
    order-key order and the evaluator's ``(fvd_note, caption_resolution, caption_prompts)``.

    Ctrl-C reaches every worker (one process group): each saves its run and stops; the
    exception is raised here after they have, so a rerun resumes every unfinished run.
    """
    ctx = mp.get_context("spawn")  # no fork of a process that may hold CUDA or OpenMP state
    done: list[tuple[tuple, dict]] = []
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(
            plan, min(resolutions), out, device, i3d, threads_per_job(jobs))) as pool:
        note = pool.submit(_note)
        pending: dict[Future, Task] = {}
        for key, spec, seed in tasks:
            pending[pool.submit(_job, spec, seed, resolutions)] = (key, spec, seed)
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    record = fut.result()
                    done.append((task[0], record))
                    for key, spec, seed in follow_up(task, record):
                        pending[pool.submit(_job, spec, seed, resolutions)] = (key, spec, seed)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        info = note.result()
    return [r for _, r in sorted(done, key=lambda kr: kr[0])], info
