"""End to end: a run trained on a folder of real-format videos (tiny H.264 mp4s written here)
is searched and evaluated against the held-out videos of that folder, and the outputs say so."""

from __future__ import annotations

import json

import pytest

from sned.cli import main
from sned.data import split_of
from sned.train.config import load_run_config
from sned.train.trainer import Trainer
from test_heldout import natural_folder

VAL_FRACTION = 0.3


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = natural_folder(tmp_path_factory.mktemp("videos"), 12, frames=12, size=32)
    assert split_of("broken.mp4", VAL_FRACTION) == "train"  # training meets it
    (root / "broken.mp4").write_bytes(b"\0" * 100)
    run = load_run_config("tiny-base", ["model.frames=4", "data.kind=folder",
                                        f"data.root={root}", f"data.val_fraction={VAL_FRACTION}",
                                        "train.batch_size=2", "train.warmup_steps=0"])
    out = tmp_path_factory.mktemp("run") / "run"
    with pytest.warns(UserWarning, match="broken.mp4"):
        Trainer(run, out, progress=False).fit(2)
    return root, out


def _check_source(src, root, n):
    assert (src["kind"], src["root"], src["split"], src["n"]) == ("folder", str(root.resolve()),
                                                                 "val", n)
    val = sorted(p.name for p in root.glob("clip_*.mp4") if split_of(p.name, VAL_FRACTION) == "val")
    assert src["videos"] == len(val) > 0


def test_training_reports_skipped_files(folder_run):
    _, out = folder_run
    state = json.loads((out / "checkpoints" / "latest" / "state.json").read_text())
    assert state["data_skipped"]["count"] == 1
    assert state["data_skipped"]["files"][0][0].endswith("broken.mp4")
    assert state["run"]["data"]["val_fraction"] == VAL_FRACTION


def test_search_and_evaluate_use_the_held_out_videos(folder_run, tmp_path, capsys):
    root, out = folder_run
    assert main(["search", str(out), "--resolution", "16", "--budget", "3", "--population", "2",
                 "--n-videos", "3", "--frames", "4", "--no-random", "--out",
                 str(tmp_path / "s")]) == 0
    front = json.loads((tmp_path / "s" / "pareto.json").read_text())
    for point in front:
        _check_source(point["val_data"], root, 3)
    _check_source(json.loads((tmp_path / "s" / "search.json").read_text())["val_data"], root, 3)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--presets", "S", "--metrics", "val_loss,latency",
                 "--n-videos", "3", "--frames", "4", "--steps", "2", "--out",
                 str(tmp_path / "e")]) == 0
    table = json.loads((tmp_path / "e" / "table.json").read_text())
    _check_source(table["real_data"]["val_loss"][0], root, 3)
    assert f"held-out videos of folder {root.resolve()}" in table["note"]
    assert "held-out videos of folder" in (tmp_path / "e" / "report.md").read_text()
    # --data overrides the recorded config: a bad key is one clear line, exit status 2
    capsys.readouterr()
    assert main(["evaluate", str(out), "--presets", "S", "--metrics", "val_loss", "--data",
                 "rot=/x", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown key 'rot'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FeatureStats")  # 2 videos per set: rank-deficient
def test_fvd_runs_each_get_their_own_real_set(folder_run, tmp_path):
    # Defect: with --runs K every run reused run 0's real statistics (one cache file).
    root, out = folder_run
    assert main(["evaluate", str(out), "--presets", "S", "--metrics", "fvd,kvd", "--runs", "2",
                 "--n-videos", "2", "--frames", "9", "--steps", "2", "--i3d", "random",
                 "--out", str(tmp_path / "f")]) == 0
    table = json.loads((tmp_path / "f" / "table.json").read_text())
    runs = table["real_data"]["fvd"]
    assert len(runs) == 2 and runs[0]["seed"] != runs[1]["seed"]
    for src in runs:
        _check_source(src, root, 2)
    assert len(list((tmp_path / "f" / "cache").glob("*.npz"))) == 2
    assert table["detector"]["random_features"] and "RANDOM" in table["note"]
