"""Checkpoint → extract → search from the command line, with the error paths."""

import json

import pytest
import torch

import sned
from sned.cli import main
from sned.pipelines.loading import load_denoiser
from sned.search.proxy import synthetic_proxy
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=0",
        "train.ema_decay=0.9"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(load_run_config("tiny-base", FAST), out, progress=False).fit(3)
    return out


def test_extract_cli_writes_a_reloadable_folder_with_card(run_dir, tmp_path, capsys):
    out = tmp_path / "S"
    assert main(["extract", str(run_dir), "--preset", "S", "--ema", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {p.name for p in out.iterdir()} == {"model_index.json", "unet", "scheduler",
                                               "README.md", "arch.json"}
    space = sned.search_space(load_run_config("tiny-base", FAST).model)
    assert printed["params"] == space.cost(space.preset("S")).params
    model = sned.load_pretrained(out)
    den = load_denoiser(run_dir, preset="S", ema=True)
    kw = sned.example_inputs(model, batch=1, frames=2)
    with torch.no_grad():
        torch.testing.assert_close(model(**kw), den.model(**kw, arch=den.arch), atol=1e-5,
                                   rtol=0)
    assert load_denoiser(out).diffusion == den.diffusion


def test_ema_and_raw_weights_differ(run_dir):
    ema = load_denoiser(run_dir, ema=True).model.state_dict()
    raw = load_denoiser(run_dir, ema=False).model.state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)


def test_extract_errors(run_dir, tmp_path, capsys):
    assert main(["extract", str(run_dir), "--preset", "XL", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'XL'" in capsys.readouterr().err
    other = sned.search_space("tiny-ssr").preset("S")
    other.save(tmp_path / "ssr.json")
    assert main(["extract", str(run_dir), "--arch", str(tmp_path / "ssr.json"), "--out",
                 str(tmp_path / "y")]) == 2
    assert "for config 'tiny-ssr'" in capsys.readouterr().err
    assert main(["extract", str(run_dir), "--preset", "S", "--resolution", "64", "--out",
                 str(tmp_path / "z")]) == 2
    assert "resolution 64" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["extract", str(run_dir), "--preset", "S", "--out", str(blocker / "m")]) == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text("{")
    assert main(["extract", str(broken), "--preset", "S", "--out", str(tmp_path / "w")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_val_loss_proxy_is_deterministic_and_arch_sensitive(run_dir):
    den = load_denoiser(run_dir)
    proxy = synthetic_proxy(den.model, den.diffusion, 16, n_videos=4, frames=2)
    space = sned.search_space(den.config)
    a, b = proxy(space.preset("B", 16)), proxy(space.preset("B", 16))
    assert a == b and a != proxy(space.preset("S", 16))
    again = synthetic_proxy(den.model, den.diffusion, 16, n_videos=4, frames=2)
    assert again(space.preset("S", 16)) == proxy(space.preset("S", 16))


def test_search_cli_writes_front_plot_and_arch(run_dir, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", str(run_dir), "--resolution", "16", "--max-params", "2.2e6",
                 "--budget", "6", "--population", "4", "--n-videos", "2", "--frames", "2",
                 "--save-arch", "pick=0", "--out", str(out)]) == 0
    front = json.loads((out / "pareto.json").read_text())
    assert front and all({"arch", "params", "macs", "val_loss"} <= set(p) for p in front)
    assert all(p["params"] <= 2.2e6 for p in front)
    assert (out / "pareto.png").stat().st_size > 1000
    arch = sned.Arch.load(out / "pick.json")
    sned.search_space(load_run_config("tiny-base", FAST).model).validate(arch)
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["hypervolume"]) == {"evolution", "random"}
