"""``sned study --jobs N`` leaves no orphan (issue 28): workers die with their parent, a rerun
cannot run beside live workers of a dead parent, the rerun's results equal an uninterrupted
run's, a finished study's rerun changes nothing, and ``--jobs`` is capped to the cores."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sned.app.study import StudyPlan, run_study
from sned.app.study_jobs import WORKERS, cap_jobs
from sned.config import ConfigError
from sned.store.files import CheckpointError

TINY = dict(steps=2, seeds=1, frames=1, batch={16: 2, 32: 1}, val_videos=2, caption_prompts=2,
            caption_steps=1, num_videos=8, pairs_per_clip=2, curve_points=2, resolutions=None)
PLAN = f"StudyPlan(**{TINY!r}, methods=('supernet', 'standalone'))"
SCRIPT = f"""
import sys
from sned.app.study import StudyPlan, run_study
if __name__ == "__main__":
    run_study(sys.argv[1], {PLAN}, device="cpu", jobs=2)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not a live worker, but a process whose main thread has ended while
        # other threads run shows its leader as a zombie too: count the threads
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z" or len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return Path(f"/proc/{pid}").exists()


def _start_and_kill(out: Path, tmp: Path, after_runs: bool) -> list[int]:
    """Start ``run_study(out, jobs=2)`` in a process, SIGKILL it once both workers hold the
    workers' lock (or, ``after_runs``, once a run has trained), return the workers' pids."""
    script = tmp / "study_main.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    pids: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        lock = out / WORKERS
        pids = [int(p) for p in lock.read_text().split()] if lock.is_file() else []
        trained = any(out.glob("runs/*/seed0/checkpoints/step-*"))
        if len(pids) == 2 and (trained or not after_runs):
            break
        time.sleep(0.2)
    assert len(pids) == 2 and proc.poll() is None, "the study did not start its two workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return pids


def test_workers_die_with_their_parent(tmp_path):
    out = tmp_path / "s"
    pids = _start_and_kill(out, tmp_path, after_runs=False)
    t0 = time.monotonic()
    while any(_alive(p) for p in pids) and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), f"workers {pids} outlived their parent by 10 s"
    fd = os.open(out / WORKERS, os.O_RDWR)  # ... and hold the study folder no more
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _hold(lock: Path, how: str) -> subprocess.Popen:
    """A process holding ``lock`` (``LOCK_EX`` / ``LOCK_SH``) with its pid written in it."""
    proc = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT | os.O_APPEND)\n"
        f"fcntl.flock(fd, fcntl.{how}); os.write(fd, f'{{os.getpid()}}\\n'.encode())\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("lock,how,message", [
    (".study.lock", "LOCK_EX", "in use by the study process {pid}"),
    (".study.workers.lock", "LOCK_SH", r"worker process\(es\) {pid} of an earlier study"),
], ids=["live-study", "live-workers-of-a-dead-study"])
def test_a_live_study_or_its_workers_own_the_folder(tmp_path, lock, how, message):
    out = tmp_path / "s"
    out.mkdir()
    holder = _hold(out / lock, how)
    try:
        with pytest.raises(ConfigError, match=message.format(pid=holder.pid)):
            run_study(out, StudyPlan(**TINY, methods=("supernet",)), device="cpu")
        assert sorted(p.name for p in out.iterdir()) <= [".study.lock",
                                                         ".study.workers.lock"]  # no run
    finally:
        holder.kill()
        holder.wait()


def test_jobs_are_capped_to_the_cores(capsys):
    cores = len(os.sched_getaffinity(0))
    assert cap_jobs(100000) == cores
    assert f"--jobs 100000 is more than the {cores} CPU core(s)" in capsys.readouterr().err
    assert cap_jobs(1) == 1 and capsys.readouterr().err == ""


@pytest.mark.slow
def test_rerun_after_a_killed_parent_equals_an_uninterrupted_run(tmp_path, capsys):
    plan = StudyPlan(**TINY, methods=("supernet", "standalone"))
    whole = json.loads(run_study(tmp_path / "whole", plan, device="cpu", jobs=2).read_text())
    out = tmp_path / "killed"
    pids = _start_and_kill(out, tmp_path, after_runs=True)
    t0 = time.monotonic()
    while any(_alive(p) for p in pids) and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)
    path = run_study(out, plan, device="cpu", jobs=2)
    again = json.loads(path.read_text())
    assert [(r["run"], r["seed"], r["steps"], r["compute"]) for r in again["runs"]] == \
        [(r["run"], r["seed"], r["steps"], r["compute"]) for r in whole["runs"]]
    for a, b in zip(whole["rows"], again["rows"], strict=True):
        assert (a["method"], a["preset"], a["resolution"], a["compute"]) == \
            (b["method"], b["preset"], b["resolution"], b["compute"])
        assert b["val_loss"]["mean"] == pytest.approx(a["val_loss"]["mean"], rel=1e-4)
    # a finished study: the rerun changes nothing (meta, date and wall time included; the
    # lock files only say who holds the folder)
    def files():
        return {p: p.read_bytes() for p in out.rglob("*")
                if p.is_file() and not p.name.startswith(".study")}
    before = files()
    capsys.readouterr()
    run_study(out, plan, device="cpu", jobs=2)
    assert "nothing to do" in capsys.readouterr().out
    assert files() == before
    # a torn record is named
    done = out / "runs" / "supernet" / "seed0" / "eval.json"
    done.write_text(done.read_text()[:40])
    with pytest.raises(CheckpointError, match=str(done)):
        run_study(out, plan, device="cpu", jobs=2)


def test_a_torn_study_file_is_named_before_any_work(tmp_path):
    """A torn ``eval.json`` (a kill during an in-place write, before writes were atomic) is
    named — not "Expecting value: line 19 column 1" — and nothing is trained or written."""
    plan = StudyPlan(**TINY, methods=("supernet",))
    out = tmp_path / "s"
    (out / "runs" / "supernet" / "seed0").mkdir(parents=True)
    (out / "study.json").write_text(json.dumps(plan.to_dict()))
    torn = out / "runs" / "supernet" / "seed0" / "eval.json"
    torn.write_text('{"method": "supernet", "run": "supernet",\n "rows": [\n')
    (out / "results.json").write_text(json.dumps({"runs": [{"run": "supernet", "seed": 0}]}))
    (out / "results.md").write_text("# sned study\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=f"{torn} is not valid JSON"):
        run_study(out, plan, device="cpu")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()
            and not p.name.startswith(".study")} == before
