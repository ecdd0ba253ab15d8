"""Bad inputs of the serving commands (extract, sample, search, evaluate): a table.

Each row: argv (``{run}``, ``{model}``, ``{out}``, ``{tmp}`` are filled in), the exit status (2),
a substring naming the value. Every row must also print no traceback and leave every file under
the test folder as it was (checked before any expensive work: nothing is created)."""

from __future__ import annotations

import zipfile

import pytest
import torch

from sned.cli import main
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=0"]

SAMPLE = ["sample", "{run}", "--prompt", "a red circle moving left", "--out", "{out}"]
SEARCH = ["search", "{run}", "--resolution", "16", "--out", "{out}"]
EVALUATE = ["evaluate", "{run}", "--presets", "S", "--random-features", "--out", "{out}"]

ROWS = [
    # sned sample
    (SAMPLE + ["--frames", "-3"], 2, "--frames -3"),
    (["sample", "{run}", "--prompt", "", "--out", "{out}"], 2, "--prompt ''"),
    (["sample", "{run}", "--prompt", "   ", "--out", "{out}"], 2, "--prompt '   '"),
    (SAMPLE + ["--cfg", "-3"], 2, "--cfg -3"),
    (SAMPLE + ["--aug-level", "5"], 2, "--aug-level 5"),
    (SAMPLE + ["--fps", "0"], 2, "--fps 0"),
    (SAMPLE + ["--steps", "0"], 2, "--steps 0"),
    (SAMPLE + ["--dynamic-threshold", "1.5"], 2, "--dynamic-threshold 1.5"),
    (SAMPLE + ["--formats", "avi"], 2, "--formats 'avi'"),
    (SAMPLE + ["--device", "tpu"], 2, "--device 'tpu'"),
    pytest.param(SAMPLE + ["--device", "cuda"], 2, "--device cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
    (SAMPLE + ["--preset", "S,,B"], 2, "--preset 'S,,B'"),
    # sned search
    (SEARCH + ["--n-videos", "0"], 2, "--n-videos 0"),
    (SEARCH + ["--budget", "4", "--save-arch", "p=99"], 2, "p=99"),
    (SEARCH + ["--save-arch", "p=x"], 2, "p=x"),
    (SEARCH + ["--save-arch", "../p=0"], 2, "../p=0"),
    (SEARCH + ["--budget", "0"], 2, "--budget 0"),
    (SEARCH + ["--max-params", "-1"], 2, "--max-params -1"),
    # sned evaluate
    (EVALUATE + ["--batch", "0"], 2, "--batch 0"),
    (EVALUATE + ["--n-videos", "1", "--frames", "9"], 2, "--n-videos 1"),
    (EVALUATE + ["--frames", "4"], 2, "--frames 4"),
    (EVALUATE + ["--runs", "0"], 2, "--runs 0"),
    (EVALUATE + ["--metrics", "fvd,bleu"], 2, "'bleu'"),
    (["evaluate", "{run}", "--frames", "9", "--i3d", "{tmp}/garbage.pt", "--out", "{out}"], 2,
     "garbage.pt"),
    (["evaluate", "{run}", "--frames", "9", "--i3d", "{tmp}/fake_script.pt", "--out", "{out}"],
     2, "fake_script.pt"),
    (EVALUATE, 2, "generates 2 frames"),
    # sned quickstart
    (["quickstart", "--out", "{out}", "--prompts", "99"], 2, "--prompts 99"),
    (["quickstart", "--out", "{out}", "--minutes", "0"], 2, "--minutes 0"),
    (["quickstart", "--out", "{out}", "--sample-steps", "0"], 2, "--sample-steps 0"),
    # sned extract
    (["extract", "{run}", "--preset", "S", "--out", "{model}"], 2, "--overwrite"),
    (["extract", "{run}", "--preset", "S", "--ema", "--raw", "--out", "{out}"], 2,
     "not allowed with argument --ema"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    Trainer(load_run_config("tiny-base", FAST), root / "run", progress=False).fit(2)
    assert main(["extract", str(root / "run"), "--preset", "M", "--out",
                 str(root / "model")]) == 0
    (root / "garbage.pt").write_bytes(b"\x00not a model\xff" * 50)
    with zipfile.ZipFile(root / "fake_script.pt", "w") as z:
        z.writestr("archive/code/__torch__.py", "def forward(self, x): return x\n")
        z.writestr("archive/constants.pkl", b"garbage")
    return root


def _snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() or p.is_dir()}


@pytest.mark.parametrize("argv,code,needle", ROWS)
def test_bad_input_is_one_clear_line(setup, capsys, argv, code, needle):
    fill = {"run": str(setup / "run"), "model": str(setup / "model"),
            "out": str(setup / "out"), "tmp": str(setup)}
    argv = [a.format(**fill) for a in argv]
    capsys.readouterr()
    before = _snapshot(setup)
    try:
        got = main(argv)
    except SystemExit as e:  # argparse errors
        got = e.code
    err = capsys.readouterr().err
    assert got == code, err
    assert needle in err, err
    assert "Traceback" not in err
    assert _snapshot(setup) == before
    assert not (setup / "out").exists()


def test_module_entry_point_knows_every_command(setup):
    """`python -m sned.cli` (what torchrun runs) dispatches the sub-commands of other modules."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sned.cli", "sample", str(setup / "run"),
                        "--prompt", "a", "--fps", "0", "--out", str(setup / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--fps 0" in r.stderr and "Traceback" not in r.stderr
    assert not (setup / "out").exists()


def test_extract_overwrite_replaces_the_folder(setup, capsys):
    target = setup / "overwrite-me"
    assert main(["extract", str(setup / "run"), "--preset", "M", "--out", str(target)]) == 0
    assert main(["extract", str(setup / "run"), "--preset", "S", "--out", str(target)]) == 2
    assert '"subnet": "M"' in (target / "unet" / "config.json").read_text()
    assert main(["extract", str(setup / "run"), "--preset", "S", "--out", str(target),
                 "--overwrite"]) == 0
    assert '"subnet": "S"' in (target / "unet" / "config.json").read_text()
