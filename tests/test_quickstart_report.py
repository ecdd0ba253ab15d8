"""The quickstart's report: steps trained per model with under-trained models flagged (issue 28
item 10), and caption accuracy next to temporal coherence for both prompt sets (issue 31)."""

from __future__ import annotations

import json
import time

from sned.app.quickstart import MIN_STEPS, Budget, Quickstart, write_quickstart_report
from sned.data.synthetic import held_out_prompts, sample_prompts


def _quickstart(tmp_path, base_steps: int) -> Quickstart:
    for kind in ("base", "ssr"):
        (tmp_path / "runs" / kind).mkdir(parents=True)
        (tmp_path / "runs" / kind / "metrics.jsonl").write_text(
            "\n".join(json.dumps({"step": i, "loss": 1.0 / i}) for i in range(1, 5)))
    rows = []
    for prompts in ("train", "held-out"):
        rows.append({"preset": "B", "resolution": 16, "params": 10**6, "macs": 10**9,
                     "prompts": prompts, "caption_color": 0.9, "caption_shape": 0.5,
                     "caption_direction": 0.75, "caption_all": 0.4, "caption_n": 36,
                     "caption_ci": {"all": [0.26, 0.56], "color": [0.77, 0.97],
                                    "shape": [0.34, 0.66], "direction": [0.59, 0.86]},
                     "coherent": 0.5, "coherent_ci": [0.34, 0.66], "present_all": 1.0,
                     "present_all_ci": [0.9, 1.0], "jump_ratio": 1.25,
                     "jump_ratio_ci": [1.0, 1.5], "track_residual": 0.012,
                     "track_residual_ci": [0.01, 0.014], "coherence_n": 36,
                     **({"val_loss": 0.1, "val_loss_init": 1.0} if prompts == "train" else {})})
    qs = Quickstart(tmp_path, Budget(60, time.monotonic()), held_out_prompts(), rows,
                    {16: [("B · a red circle (unseen combination)", "videos/x.gif", None)]},
                    train_prompts=sample_prompts(36, split="train"))
    qs.training = {"base": {"steps": base_steps, "minimum": MIN_STEPS["base"]},
                   "ssr": {"steps": MIN_STEPS["ssr"], "minimum": MIN_STEPS["ssr"]}}
    return qs


def test_report_lists_steps_and_flags_under_trained_models(tmp_path):
    write_quickstart_report(_quickstart(tmp_path, 3))
    md = (tmp_path / "report.md").read_text()
    assert "WARNING: under-trained (base:" in md.splitlines()[2]
    assert f"| base | 3 | {MIN_STEPS['base']} | UNDER-TRAINED" in md
    assert f"| ssr | {MIN_STEPS['ssr']} | {MIN_STEPS['ssr']} | ok |" in md


def test_report_shows_accuracy_and_coherence_for_both_prompt_sets(tmp_path):
    write_quickstart_report(_quickstart(tmp_path, MIN_STEPS["base"]))
    md = (tmp_path / "report.md").read_text()
    assert "WARNING" not in md
    for kind in ("train", "held-out"):
        assert (f"| {kind} | B | 16 | 90% [77%–97%] | 50% [34%–66%] | 75% [59%–86%] "
                f"| 40% [26%–56%] | 36 |") in md
        assert (f"| {kind} | B | 16 | 50% [34%–66%] | 100% [90%–100%] | 1.25 [1.00–1.50] "
                f"| 1.2% [1.0%–1.4%] | 36 |") in md
    assert "(unseen combination)" in md
    assert "## Temporal coherence: does the object move steadily?" in md


def test_quickstart_on_a_machine_far_too_busy_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """Issue 28 item 10: 37.6 s/step measured → exit 2 before training, naming the step time;
    nothing trained is left behind and a rerun is not refused."""
    import sned.app.timed_training as tt
    from sned.cli import main

    monkeypatch.setattr(tt, "step_seconds", lambda *a: (37.6, 37.6))
    for _ in range(2):
        assert main(["quickstart", "--out", str(tmp_path / "q"), "--minutes", "1"]) == 2
        err = capsys.readouterr().err
        assert "37.60 s per training step" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q" / "runs").exists()
