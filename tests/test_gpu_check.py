"""benchmarks/gpu_check.py --smoke: the GPU check's code runs end to end on the CPU (tiny-base),
so it works the day a GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_part_and_passes(tmp_path):
    out, md = tmp_path / "gpu_check.json", tmp_path / "gpu_check.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep +
           os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                           "--out", str(out), "--md", str(md), "--ddp-timeout", "240"], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    r = json.loads(out.read_text())
    assert r["smoke"] and r["pass"]
    assert r["attention"]["fused_only"] == "ok" and sum(r["attention"]["sdpa_calls_per_step"]
                                                        .values()) > 0
    assert [(m["batch"], m["checkpointing"]) for m in r["memory"]] == [(1, False), (2, True)]
    assert all(0.85 <= m["ratio"] <= 1.15 for m in r["memory"])
    assert r["mfu"][0]["step_s"] > 0 and r["mfu"][0]["model_tflop_per_step"] > 0
    assert r["ddp"]["identical_weights"] and len(r["ddp"]["hashes"]) == 2
    assert r["sampling"]["S_s"] > 0 and r["sampling"]["speedup_B_over_S"] > 0
    text = md.read_text()
    assert text.startswith("## GPU check") and "identical weights **True**" in text
    # v2: profile by category, training variants, sampling variants, tiny step old vs new
    g = r["profile"]
    assert g["launches"] > 0 and sum(g["ms_by_category"].values()) > 0
    assert g["ms_by_category"]["optimizer"] > 0 and g["ms_by_category"]["conv"] > 0
    names = [v["variant"] for v in r["variants"]]
    assert len(names) == 10 and all(v["step_s"] > 0 for v in r["variants"])
    ckpt = {v["variant"]: v for v in r["variants"] if v["variant"].startswith("every level")}
    assert {(v["checkpoint_unit"], v["checkpoint_policy"]) for v in ckpt.values()} == {
        ("block", "full"), ("layer", "full"), ("block", "selective"), ("layer", "selective")}
    assert all(v["estimate_gib"] > 0 and v["checkpointing"] is True for v in ckpt.values())
    s = r["sampling"]
    assert s["S_autocast_every_step_s"] > 0 and s["B_weights_cast_once_s"] > 0
    assert r["tiny"]["legacy_ms"] > 0 and r["tiny"]["fused_ms"] > 0
    assert "(h) training variants" in text and "(j) tiny-base study step" in text
