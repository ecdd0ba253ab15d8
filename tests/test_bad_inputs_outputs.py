"""Nothing a user types destroys data or runs code (issue 17): one row per finding.

Every row is a command that must exit 2 with one line naming the value or file, no traceback,
and every file of the shared world (a supernet run, a model folder, an autoencoder run, a latent
run and its model folder, a DiffNAS teacher and a DiffNAS run killed in the middle of its first
stage) and of the row's own folder unchanged — hashed before and after. Placeholders: ``{run}``
``{model}`` ``{ae}`` ``{latent}`` ``{lmodel}`` ``{teacher}`` ``{dn}`` (the world) and ``{tmp}``
(the row's folder, where ``setup`` may put files first). ``cwd`` runs the row from that folder.
Below the table: the tests of what must work (an own folder replaced, a killed extract, the
perceptual opt-in, pixels for latent models).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import sned
from sned.cli import main
from sned.extract import read_model_meta
from sned.diffnas.tasks import BlockDistillTask
from sned.diffusion import DiffusionConfig
from test_bad_inputs import FAST, tree_hash

torch.set_num_threads(1)

AE = ["train.batch_size=2", "train.ema_decay=0", "train.lr_warmup_steps=0", "data.num_videos=8",
      "model.resolutions=[8, 16]", "model.frames=4", "--no-progress", "--steps", "2"]
LATENT = ["--no-progress", "--steps", "2", "train.batch_size=2", "train.ema_decay=0",
          "data.num_videos=8"]
SMALL = ["frames=2", "resolutions=[16]", "model_channels=16", "heads=[1,2,2]",
         "time_embed_dim=32"]
DN = ["--supernet-steps", "4", "--retrain-steps", "2", "--budget", "3", "--batch-size", "2",
      "--heldout", "2", "--fvd-videos", "0", "--device", "cpu", "--data", "num_videos=8"]
"""The DiffNAS run of the world (rows rerun it with one setting changed)."""


class Killed(Exception):
    pass


@dataclass
class Case:
    id: str
    argv: list[str]
    names: list[str]
    setup: Callable[[dict, Path], None] | None = None
    cwd: str | None = None


def _diffnas(teacher: str, out: str, *extra: str) -> list[str]:
    return ["diffnas", teacher, "--out", out, *DN, *extra]


def _kill_in_step(step: int, argv: list[str]) -> None:
    """Run ``argv`` (a ``sned diffnas``) and kill it in the supernet stage's ``step``."""
    backward = BlockDistillTask.backward

    def dies(self, trainer, batch):
        if trainer.step == step:
            raise Killed
        return backward(self, trainer, batch)

    BlockDistillTask.backward = dies
    try:
        with pytest.raises(Killed):
            main(argv)
    finally:
        BlockDistillTask.backward = backward


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    w = {k: root / k for k in ("run", "model", "ae", "latent", "lmodel", "teacher", "dn")}
    assert main(["train", "tiny-base", "--out", str(w["run"]), *FAST]) == 0
    assert main(["extract", str(w["run"]), "--preset", "S", "--out", str(w["model"])]) == 0
    assert main(["train", "tiny-ae", "--out", str(w["ae"]), *AE]) == 0
    assert main(["train", "tiny-latent", "--out", str(w["latent"]), *LATENT,
                 f"autoencoder={w['ae']}"]) == 0
    assert main(["extract", str(w["latent"]), "--preset", "S", "--out", str(w["lmodel"])]) == 0
    torch.manual_seed(0)
    sup = sned.build_supernet("tiny-base", SMALL)
    sned.save_pretrained(sned.extract(sup, sned.search_space(sup.config).preset("M")),
                         w["teacher"], extra={"diffusion": DiffusionConfig().to_dict()})
    _kill_in_step(3, _diffnas(str(w["teacher"]), str(w["dn"])))  # mid-stage 1, step-3 saved
    assert (w["dn"] / "work" / "supernet" / "checkpoints" / "step-0000002").is_dir()
    return w


# ------------------------------------------------------------------------------ setups
def _write(name: str, data: bytes | str) -> Callable[[dict, Path], None]:
    def setup(w, tmp):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _copy(key: str, name: str, mutate: Callable[[Path], None] | None = None):
    def setup(w, tmp):
        shutil.copytree(w[key], tmp / name, symlinks=True)
        if mutate is not None:
            mutate(tmp / name)
    return setup


def _edit_json(rel: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(folder: Path):
        path = (folder / rel).resolve()
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return mutate


def _garble(rel: str) -> Callable[[Path], None]:
    return lambda folder: (folder / rel).resolve().write_text("{garbled")


def _evil_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"x": Evil()}, path)


def _evil(name: str) -> Callable[[dict, Path], None]:
    return lambda w, tmp: _evil_pickle(tmp / name, tmp / "MARKER")


def _torchscript(w, tmp):
    class L1(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().flatten(1).mean(1)
    torch.jit.script(L1()).save(str(tmp / "lpips.pt"))


def _short_arch(w, tmp):
    """An arch of tiny-base with its last block dropped (a block-count mismatch)."""
    arch = sned.search_space(sned.load_config("tiny-base")).preset("S").to_dict()
    arch["blocks"] = arch["blocks"][:-1]
    (tmp / "arch.json").write_text(json.dumps(arch))


def _other_teacher_weights(w, tmp):
    """A copy of the DiffNAS run whose state names a copy of the teacher with other weights."""
    shutil.copytree(w["teacher"], tmp / "t")
    path = tmp / "t" / "diffusion_pytorch_model.safetensors"
    state = sned.store.files.load_safetensors(path)
    first = sorted(state)[0]
    state[first] = state[first] + 1
    from safetensors.torch import save_file
    save_file(state, path)
    shutil.copytree(w["dn"], tmp / "dn", symlinks=True)
    _edit_json("state.json", lambda s: s.update(teacher=str((tmp / "t").resolve())))(tmp / "dn")


def _stage_done(*stages: str, garble: str | None = None):
    def mutate(dn: Path):
        _edit_json("state.json", lambda s: s.update(done=list(stages)))(dn)
        if garble:
            (dn / garble).parent.mkdir(parents=True, exist_ok=True)
            (dn / garble).write_bytes(b"not safetensors, not json")
    return mutate


def _keep_only(folder: Path, sub: str) -> None:
    """Make ``folder`` the copy of its sub-folder ``sub`` (e.g. a run's ``autoencoder/``)."""
    tmp = folder.with_name(folder.name + "-sub")
    shutil.move(folder / sub, tmp)
    shutil.rmtree(folder)
    tmp.rename(folder)


TINY_AE_LPIPS = ["train", "tiny-ae", "--out", "{tmp}/r", *AE]

# ------------------------------------------------------------------------------ the table
TABLE: list[Case] = [
    # 1. --overwrite removes only what the command wrote
    Case("1-extract-out-dot-overwrite", ["extract", "{run}", "--preset", "S", "--out", ".",
                                         "--overwrite"], ["--out .", "working directory"],
         setup=_write("keep.txt", "mine"), cwd="{tmp}"),
    Case("1-extract-out-run-overwrite", ["extract", "{run}", "--preset", "S", "--out", "{run}",
                                         "--overwrite"], ["{run}", "input"]),
    Case("1-extract-out-other-files-overwrite", ["extract", "{run}", "--preset", "S", "--out",
                                                 "{tmp}/mine", "--overwrite"],
         ["{tmp}/mine", "notes.txt"], setup=_write("mine/notes.txt", "mine")),
    Case("1-extract-out-other-run-overwrite", ["extract", "{run}", "--preset", "S", "--out",
                                               "{tmp}/run", "--overwrite"],
         ["{tmp}/run", "training run"], setup=_copy("run", "run")),
    Case("1-extract-out-inside-input", ["extract", "{run}", "--preset", "S", "--out",
                                        "{run}/checkpoints/m"], ["{run}/checkpoints/m", "input"]),
    Case("1-extract-out-model-no-overwrite", ["extract", "{run}", "--preset", "S", "--out",
                                              "{model}"], ["{model}", "--overwrite"]),
    Case("1-train-out-dot-overwrite", ["train", "tiny-base", "--out", ".", "--overwrite", *FAST],
         ["--out .", "working directory"], setup=_copy("run", "run"), cwd="{tmp}/run"),
    Case("1-train-into-model-folder", ["train", "tiny-base", "--out", "{model}", *FAST],
         ["{model}", "model folder"]),
    Case("1-quickstart-into-run-overwrite", ["quickstart", "--out", "{run}", "--overwrite",
                                             "--max-steps", "1"], ["{run}", "training run"]),
    Case("1-quickstart-user-videos-overwrite", ["quickstart", "--out", "{tmp}", "--overwrite",
                                                "--max-steps", "1"], ["{tmp}", "videos"],
         setup=_write("videos/holiday.mp4", b"\0" * 64)),
    Case("1-study-into-run", ["study", "--out", "{run}", "--quick"], ["{run}", "training run"]),
    Case("1-evaluate-into-input", ["evaluate", "{model}", "--random-features", "--out",
                                   "{model}"], ["{model}", "input"]),
    Case("1-sample-inside-input", ["sample", "{model}", "--prompt", "a red circle", "--out",
                                   "{model}/videos"], ["{model}/videos", "input"]),
    Case("1-search-into-model-folder", ["search", "{run}", "--resolution", "16", "--out",
                                        "{model}"], ["{model}", "model folder"]),
    # 2. a DiffNAS run killed in its first stage is continued only by the same run
    Case("2-diffnas-mid-stage1-other-lr", _diffnas("{teacher}", "{dn}", "--lr", "1e-2"),
         ["--lr 0.01", "0.001"]),
    Case("2-diffnas-mid-stage1-other-seed", _diffnas("{teacher}", "{dn}", "--seed", "7"),
         ["--seed 7"]),
    Case("2-diffnas-mid-stage1-other-teacher-prob",
         _diffnas("{teacher}", "{dn}", "--teacher-prob", "0.5"), ["--teacher-prob 0.5"]),
    Case("2-diffnas-mid-stage1-other-teacher", _diffnas("{model}", "{dn}"), ["teacher", "{model}"]),
    Case("2-diffnas-same-path-other-weights", _diffnas("{tmp}/t", "{tmp}/dn"),
         ["{tmp}/t", "sha256"], setup=_other_teacher_weights),
    Case("2-diffnas-leftovers-without-state", _diffnas("{teacher}", "{tmp}/dn"),
         ["{tmp}/dn", "state.json"], setup=_copy("dn", "dn", lambda d: (d / "state.json").unlink())),
    # 3. perceptual_weights runs no code
    Case("3-perceptual-crafted-pt2", [*TINY_AE_LPIPS, "model.perceptual_weights={tmp}/evil.pt2"],
         ["{tmp}/evil.pt2", "runs code"], setup=_evil("evil.pt2")),
    Case("3-perceptual-crafted-pickle", [*TINY_AE_LPIPS, "model.perceptual_weights={tmp}/e.pt"],
         ["{tmp}/e.pt", "without running code"], setup=_evil("e.pt")),
    Case("3-perceptual-torchscript-without-opt-in",
         [*TINY_AE_LPIPS, "model.perceptual_weights={tmp}/lpips.pt"],
         ["{tmp}/lpips.pt", "perceptual_trust_code"], setup=_torchscript),
    # 4. DiffNAS never writes into its teacher
    Case("4-diffnas-out-is-teacher", _diffnas("{teacher}", "{teacher}"), ["{teacher}", "input"]),
    Case("4-diffnas-out-inside-teacher", _diffnas("{teacher}", "{teacher}/d"),
         ["{teacher}/d", "input"]),
    Case("4-diffnas-into-a-run", _diffnas("{teacher}", "{run}"), ["{run}", "training run"]),
    # 6. garbled files and flags: one line, no traceback
    Case("6-diffusion-bogus-key", ["sample", "{tmp}/m", "--prompt", "x", "--out", "{tmp}/o"],
         ["{tmp}/m/unet/config.json", "diffusion", "bogus"],
         setup=_copy("model", "m", _edit_json("unet/config.json", lambda m: m["sned"].update(
             diffusion={"bogus": 1})))),
    Case("6-diffusion-null", ["sample", "{tmp}/m", "--prompt", "x", "--out", "{tmp}/o"],
         ["{tmp}/m/unet/config.json", "diffusion"],
         setup=_copy("model", "m", _edit_json("unet/config.json",
                                              lambda m: m["sned"].update(diffusion=None)))),
    Case("6-latent-stats-not-a-number", ["sample", "{tmp}/m", "--out", "{tmp}/o"],
         ["{tmp}/m/vae/config.json", "scaling_factor"],
         setup=_copy("lmodel", "m", _edit_json("vae/config.json",
                                               lambda m: m.update(scaling_factor="x")))),
    Case("6-diffnas-corrupt-student", _diffnas("{teacher}", "{tmp}/dn"),
         ["{tmp}/dn/work/student.safetensors", "corrupt"],
         setup=_copy("dn", "dn", _stage_done("supernet", garble="work/student.safetensors"))),
    Case("6-diffnas-max-macs-inf", _diffnas("{teacher}", "{tmp}/d", "--max-macs", "inf"),
         ["--max-macs inf"]),
    Case("6-diffnas-max-macs-nan", _diffnas("{teacher}", "{tmp}/d", "--max-macs", "nan"),
         ["--max-macs nan"]),
    # 7. bad input found before any work
    Case("7-diffnas-latent-teacher-without-its-ae", _diffnas("{tmp}/m", "{tmp}/d"),
         ["{tmp}/m", "autoencoder"],
         setup=_copy("lmodel", "m", lambda f: shutil.rmtree(f / "vae"))),
    Case("7-diffnas-compare-at-the-teachers-macs", _diffnas("{teacher}", "{tmp}/d", "--compare",
                                                            "0.5,1"), ["--compare 1", "100.0%"]),
    Case("7-diffnas-data-root-missing",
         _diffnas("{teacher}", "{tmp}/d", "--data", "kind=folder", "root={tmp}/none"),
         ["root={tmp}/none"]),
    Case("7-diffnas-out-is-a-file", _diffnas("{teacher}", "{tmp}/f"), ["{tmp}/f", "file"],
         setup=_write("f", "x")),
    # 8. resolutions are pixels
    Case("8-search-latent-pixels", ["search", "{latent}", "--resolution", "8", "--budget", "2",
                                    "--out", "{tmp}/s"], ["resolution 8 px", "[16, 32] px"]),
    Case("8-extract-latent-pixels", ["extract", "{latent}", "--preset", "S", "--resolution", "8",
                                     "--out", "{tmp}/m"], ["resolution 8 px", "[16, 32] px"]),
    # 9. values that do not apply are errors
    Case("9-evaluate-ae-resolution", ["evaluate", "{ae}", "--resolution", "17", "--out",
                                      "{tmp}/e"], ["--resolution", "autoencoder"]),
    Case("9-evaluate-ae-presets", ["evaluate", "{ae}", "--presets", "S", "--out", "{tmp}/e"],
         ["--presets"]),
    Case("9-evaluate-ae-metrics", ["evaluate", "{ae}", "--metrics", "fvd", "--out", "{tmp}/e"],
         ["--metrics"]),
    Case("9-sample-latent-prompt", ["sample", "{lmodel}", "--prompt", "a red circle", "--out",
                                    "{tmp}/o"], ["--prompt", "unconditional"]),
    # 10. --resume continues only the task that wrote the run
    Case("10-train-resume-diffnas-stage", ["train", "tiny-base", "--out",
                                           "{dn}/work/supernet", "--resume", *FAST],
         ["{dn}/work/supernet", "diffnas-supernet"]),
    Case("10-train-overwrite-diffnas-stage", ["train", "tiny-base", "--out",
                                              "{dn}/work/supernet", "--overwrite", *FAST],
         ["{dn}/work/supernet", "diffnas-supernet"]),
    # 11. messages that say what is wrong
    Case("11-extract-ae-run", ["extract", "{ae}", "--preset", "S", "--out", "{tmp}/m"],
         ["{ae}", "is an autoencoder, not a denoiser"]),
    Case("11-sample-ae-run", ["sample", "{ae}", "--out", "{tmp}/o"],
         ["{ae}", "is an autoencoder, not a denoiser"]),
    Case("11-garbled-ae-state-json", ["train", "tiny-latent", "--out", "{tmp}/r", *LATENT,
                                      "autoencoder={tmp}/ae"],
         ["{tmp}/ae", "state.json", "not valid JSON"],
         setup=_copy("ae", "ae", _garble("checkpoints/latest/state.json"))),
    Case("11-garbled-ae-folder-config", ["train", "tiny-latent", "--out", "{tmp}/r", *LATENT,
                                         "autoencoder={tmp}/a"],
         ["{tmp}/a/config.json", "not valid JSON"],
         setup=_copy("latent", "a", lambda d: _keep_only(d, "autoencoder")
                     or _garble("config.json")(d))),
    Case("11-arch-block-count", ["cost", "tiny-base", "--arch", "{tmp}/arch.json"],
         ["{tmp}/arch.json", "blocks"], setup=_short_arch),
    Case("11-extract-arch-block-count", ["extract", "{run}", "--arch", "{tmp}/arch.json",
                                         "--out", "{tmp}/m"], ["{tmp}/arch.json", "blocks"],
         setup=_short_arch),
    Case("11-diffnas-bad-search-json", _diffnas("{teacher}", "{tmp}/dn"),
         ["{tmp}/dn/search.json"],
         setup=_copy("dn", "dn", lambda d: _stage_done("supernet", "search")(d) or
                     (d / "search.json").write_text(json.dumps(
                         {"subnet": {"arch": {"resolution": 16, "blocks": []}, "macs": 1}})))),
    # 12. issue 28: inputs of every kind, overflowing numbers, silent results, links
    Case("12-train-out-is-init-from-overwrite", ["train", "tiny-base", "--out", "{run}",
                                                 "--init-from", "{run}", "--overwrite", *FAST],
         ["--out {run}", "is the input {run}"]),
    Case("12-memory-batch-overflow", ["memory", "tiny-base", "--batch",
                                      "99999999999999999999999999"],
         ["--batch 99999999999999999999999999"]),
    Case("12-memory-device-memory-inf", ["memory", "tiny-base", "--device-memory", "inf"],
         ["--device-memory inf"]),
    Case("12-memory-frames-overflow", ["memory", "tiny-base", "--frames",
                                       "99999999999999999999"], ["--frames 99999999999999999999"]),
    Case("12-train-frames-overflow", ["train", "tiny-base", "--out", "{tmp}/x", "--steps", "1",
                                      "model.frames=99999999999999999999"],
         ["frames", "99999999999999999999"]),
    Case("12-sample-presets-without-ssr", ["sample", "{run}", "--preset", "S,M", "--compile",
                                           "--prompt", "x", "--out", "{tmp}/o"],
         ["--preset S,M", "--ssr"]),
    Case("12-extract-out-link-overwrite", ["extract", "{run}", "--preset", "S", "--out",
                                           "{tmp}/link", "--overwrite"],
         ["{tmp}/link", "symbolic link", "{model}"],
         setup=lambda w, tmp: (tmp / "link").symlink_to(w["model"])),
]


def _fill(text: str, w: dict, tmp: Path) -> str:
    for k, v in w.items():
        text = text.replace("{" + k + "}", str(v))
    return text.replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_refused_and_nothing_touched(case: Case, world, tmp_path: Path, capsys, monkeypatch):
    if case.setup is not None:
        case.setup(world, tmp_path)
    if case.cwd is not None:
        monkeypatch.chdir(_fill(case.cwd, world, tmp_path))
    argv = [_fill(a, world, tmp_path) for a in case.argv]
    before = {k: tree_hash(v) for k, v in world.items()} | {"tmp": tree_hash(tmp_path)}
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "error" in lines[-1], err
    for name in case.names:
        assert _fill(name, world, tmp_path) in lines[-1], f"{name!r} not named in: {lines[-1]}"
    after = {k: tree_hash(v) for k, v in world.items()} | {"tmp": tree_hash(tmp_path)}
    assert after == before, "files were changed"
    assert not (tmp_path / "MARKER").exists(), "a loaded file ran code"


# ------------------------------------------------------------------------------ what must work
def test_latent_extract_is_one_rename_and_cleans_killed_temps(world, tmp_path, monkeypatch):
    """A kill while the autoencoder is written leaves no model folder (the rerun is not refused);
    a temp folder of an earlier killed extract is removed by the next one."""
    from sned.models.autoencoder import VideoAutoencoder

    out = tmp_path / "m"
    save = VideoAutoencoder.save_pretrained

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(VideoAutoencoder, "save_pretrained", killed)
    assert main(["extract", str(world["latent"]), "--preset", "S", "--out", str(out)]) == 130
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(VideoAutoencoder, "save_pretrained", save)
    stale = tmp_path / ".tmp-m-999999999"  # a pid that is not running
    (stale / "vae").mkdir(parents=True)
    assert main(["extract", str(world["latent"]), "--preset", "S", "--resolution", "32",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    card = read_model_meta(out)["card"]
    assert card["resolution"] == 8 and card["pixel_resolution"] == 32  # --resolution in pixels
    assert main(["extract", str(world["latent"]), "--preset", "M", "--out", str(out),
                 "--overwrite"]) == 0  # its own folder is replaced
    assert read_model_meta(out)["card"]["subnet"] == "M"


def test_diffnas_killed_in_its_first_step_records_its_settings(world, tmp_path, capsys):
    out = tmp_path / "d"
    _kill_in_step(0, _diffnas(str(world["teacher"]), str(out)))
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == [] and state["options"]["lr"] == 1e-3
    assert len(state["teacher_sha256"]) == 64
    assert not (out / "work" / "supernet" / "checkpoints").exists()
    capsys.readouterr()
    assert main(_diffnas(str(world["teacher"]), str(out), "--lr", "1e-2")) == 2
    assert "--lr 0.01" in capsys.readouterr().err
    assert main(_diffnas(str(world["teacher"]), str(out))) == 0  # the same run continues
    done = json.loads((out / "state.json").read_text())["done"]
    assert done == ["supernet", "search", "retrain", "baseline", "report"]


def test_perceptual_state_dicts_load_and_code_needs_the_opt_in(tmp_path):
    from safetensors.torch import save_file

    from sned.config import ConfigError
    from sned.metrics.perceptual import LPIPS, load_perceptual

    torch.manual_seed(0)
    net = LPIPS()
    for lin in (getattr(net, f"lin{i}") for i in range(5)):
        lin.model[1].weight.data.abs_()
    save_file(net.state_dict(), tmp_path / "lpips.safetensors")
    torch.save(net.state_dict(), tmp_path / "lpips.pth")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for name in ("lpips.safetensors", "lpips.pth"):
        loaded = load_perceptual(tmp_path / name)
        assert loaded(x, x).abs().max() < 1e-6 and (loaded(x, -x) > 0).all()
    _torchscript(None, tmp_path)
    with pytest.raises(ConfigError, match="perceptual_trust_code"):
        load_perceptual(tmp_path / "lpips.pt")
    assert load_perceptual(tmp_path / "lpips.pt", trust_code=True)(x, -x).shape == (2,)
    _evil_pickle(tmp_path / "evil.pt2", tmp_path / "MARKER")
    for trust in (False,):
        with pytest.raises(ConfigError):
            load_perceptual(tmp_path / "evil.pt2", trust_code=trust)
    assert not (tmp_path / "MARKER").exists()


def test_study_interrupted_at_any_moment_says_so(tmp_path, monkeypatch, capsys):
    """SIGTERM outside training (here: while "evaluating") exits 130 with a message, not a
    silent 143."""
    import sned.cli.study

    def evaluating(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(sned.cli.study, "run_study", evaluating)
    assert main(["study", "--out", str(tmp_path / "s"), "--quick"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
