"""Sampling schedules: a subnet per denoising step (sned.schedule, sample(schedule=), the CLI,
the schedule folder)."""

from __future__ import annotations

import json

import pytest
import torch

import sned
from sned.cli import main
from sned.diffusion import DiffusionConfig
from sned.pipelines import Stage, generate, sample
from sned.pipelines.loading import load_cascade, load_denoiser
from sned.schedule import (Schedule, ScheduleError, parse_schedule, resolve_schedule,
                           sampler_timesteps, trajectory_macs)
from sned.schedule.folder import load_schedule_folder, union_arch
from sned.space import SearchSpace
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

KW = dict(frames=2, progress=False)
FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=0",
        "train.final_min_ratio=0.6"]


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 6, 384, generator=g), torch.ones(2, 6, dtype=torch.bool)


@pytest.fixture(scope="module")
def space():
    return sned.search_space("tiny-base")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(load_run_config("tiny-base", FAST), out, progress=False).fit(2)
    return out


def test_one_segment_schedule_equals_plain_sampling_bitwise(tiny_base, text, space):
    arch = space.preset("S")
    sched = resolve_schedule("S:0-1000", space, 1000)
    for kind in ("ddim", "dpm"):
        plain = sample(tiny_base, *text, arch=arch, scheduler=kind, steps=3, seed=5,
                       guidance_scale=3.0, **KW)
        scheduled = sample(tiny_base, *text, schedule=sched, scheduler=kind, steps=3, seed=5,
                           guidance_scale=3.0, **KW)
        assert torch.equal(plain, scheduled)


@pytest.mark.parametrize("boundary", [400, 399])
def test_two_segments_switch_exactly_at_the_boundary(tiny_base, text, space, boundary):
    small, big = space.preset("S"), space.preset("B")
    sched = resolve_schedule(f"B:{boundary}-1000,S:0-{boundary}", space, 1000)
    ran: list[tuple[int, object]] = []

    def record(module, args, kwargs):
        ran.append((int(args[1][0]), kwargs["arch"]))

    handle = tiny_base.register_forward_pre_hook(record, with_kwargs=True)
    try:
        sample(tiny_base, *text, schedule=sched, scheduler="ddim", steps=5, seed=0, **KW)
    finally:
        handle.remove()
    assert [t for t, _ in ran] == [999, 799, 599, 399, 199]
    for t, arch in ran:
        assert arch == (big if t >= boundary else small), (t, boundary)
    # the schedule is no different from running the two archs by hand
    assert sched.arch_at(boundary) == big and sched.arch_at(boundary - 1) == small


def test_spec_json_and_schedule_round_trip(space, tmp_path):
    sched = resolve_schedule("S:0-400,0.75:400-700,B:700-1000", space, 1000)
    assert sched.label == "S@0-400+0.75@400-700+B@700-1000"
    sched.save(tmp_path / "s.json")
    again = resolve_schedule(str(tmp_path / "s.json"), space, 1000)
    assert again == sched
    space.preset("M").save(tmp_path / "m.json")
    mixed = {"format": "sned-schedule", "segments": [
        {"timesteps": [500, 1000], "arch": "m.json"}, {"timesteps": [0, 500], "preset": "S"}]}
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    got = resolve_schedule(str(tmp_path / "mixed.json"), space, 1000)
    assert [s.label for s in got.segments] == ["S", "m"]  # sorted by start
    assert got.arch_at(999) == space.preset("M")
    assert parse_schedule(sched).resolve(space, 1000) == sched


def test_trajectory_macs_sum_the_cost_model_over_the_sampler_steps(space):
    sched = resolve_schedule("S:0-500,B:500-1000", space, 1000)
    ts = sampler_timesteps(DiffusionConfig(), "dpm", 10)
    assert ts == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    s, b = (space.cost(space.preset(p)).macs for p in "SB")
    assert trajectory_macs(sched, space, ts) == 5 * b + 5 * s


@pytest.mark.parametrize("spec, words", [
    ("S:0-400,B:450-1000", ["segment 2 (B:450-1000)", "gap", "[400, 450)"]),
    ("S:0-400,B:300-1000", ["segment 2 (B:300-1000)", "overlaps", "segment 1 (S:0-400)"]),
    ("S:0-400,XL:400-1000", ["segment 2 (XL:400-1000)", "unknown preset 'XL'"]),
    ("S:0-400,B:400-900", ["segment 2 (B:400-900)", "[900, 1000)"]),
    ("S:100-1000", ["segment 1 (S:100-1000)", "[0, 100)"]),
    ("S:0-400,B:400-1000,", ["expected NAME:START-END"]),
])
def test_bad_schedules_exit_2_naming_the_segment(run_dir, tmp_path, capsys, spec, words):
    out = tmp_path / "o"
    code = main(["sample", str(run_dir), "--schedule", spec, "--prompt", "a red circle",
                 "--steps", "2", "--frames", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sned sample: error:") and err.count("\n") == 1
    for w in words:
        assert w in err, (w, err)
    assert not out.exists() or not any(out.iterdir())


def test_arch_outside_the_run_floors_is_refused_naming_the_segment(run_dir, tmp_path, capsys):
    full = SearchSpace("tiny-base", min_ratio=0.4)  # the config's floors, below the run's 0.6
    full.smallest(min_ratio=0.5, min_keep=0.5).save(tmp_path / "thin.json")
    code = main(["extract", str(run_dir), "--schedule", f"{tmp_path / 'thin.json'}:0-300,B:300"
                 f"-1000", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert "segment 1 (thin:0-300)" in err and "below the floor 0.6" in err
    assert not (tmp_path / "x").exists()


def test_cli_sample_with_a_schedule_writes_labelled_files(run_dir, tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["sample", str(run_dir), "--schedule", "S:0-500,B:500-1000", "--prompt",
                 "a red circle", "--steps", "2", "--frames", "2", "--formats", "gif",
                 "--out", str(out)]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [p.split("/")[-1] for p in files] == ["a-red-circle_S@0-500+B@500-1000_16px_seed0.gif"]


def test_extracted_schedule_folder_stores_the_union_once_and_samples_the_same(run_dir, tmp_path,
                                                                              capsys, text):
    out = tmp_path / "sched"
    assert main(["extract", str(run_dir), "--schedule", "S:0-600,B:600-1000", "--out",
                 str(out)]) == 0
    card = json.loads(capsys.readouterr().out)
    den = load_denoiser(run_dir, schedule="S:0-600,B:600-1000")
    space = den.space
    s, b = (space.cost(a).params for a in den.schedule.archs())
    assert card["params"] == b < card["whole_params"] == s + b  # B holds S: stored once
    assert union_arch(space, den.schedule.archs()) == space.preset("B")
    subnets, sched, _ = load_schedule_folder(out)
    assert sched == den.schedule
    for arch, model in zip(sched.archs(), subnets.subnets):  # bitwise the supernet's slices
        ref = sned.extract(den.model, arch)
        assert all(torch.equal(x, y) for x, y in zip(ref.state_dict().values(),
                                                      model.state_dict().values()))
    folder = load_denoiser(out)
    assert folder.schedule == den.schedule and folder.label == "S@0-600+B@600-1000"
    a = sample(den.model, *text, schedule=den.schedule, diffusion=den.diffusion, steps=3,
               seed=1, **KW)
    c = sample(folder.model, *text, schedule=folder.schedule, diffusion=folder.diffusion,
               steps=3, seed=1, **KW)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)
    assert main(["sample", str(out), "--prompt", "x", "--steps", "2", "--frames", "2",
                 "--formats", "gif", "--out", str(tmp_path / "v")]) == 0
    assert "S@0-600+B@600-1000" in capsys.readouterr().out
    assert main(["sample", str(out), "--preset", "S", "--prompt", "x", "--out",
                 str(tmp_path / "w")]) == 2
    assert "runs its own schedule" in capsys.readouterr().err


def test_union_of_mixed_archs_is_the_per_layer_widest(space):
    a = space.preset("S")
    b = space.preset(0.7)
    u = union_arch(space, [a, b])
    for spec, x, y, z in zip(space.specs, a.blocks, b.blocks, u.blocks):
        assert set(z.keep) == set(x.keep) | set(y.keep)
        for slot, r in z.ratios:
            used = [blk.ratio(slot) for blk in (x, y) if slot in sned.space.active_slots(
                spec, blk.keep)]
            assert r == (max(used) if used else 1.0)
    assert space.cost(u).params <= space.cost(a).params + space.cost(b).params


def test_cascade_takes_a_schedule_per_stage(tiny_base, tiny_ssr, text):
    base_space, ssr_space = sned.search_space("tiny-base"), sned.search_space("tiny-ssr")
    s_base = resolve_schedule("S:0-500,B:500-1000", base_space, 1000)
    s_ssr = resolve_schedule("B:0-500,S:500-1000", ssr_space, 1000, 32)
    seen = []
    h = tiny_ssr.register_forward_pre_hook(
        lambda m, a, k: seen.append((int(a[1][0]), k["arch"])), with_kwargs=True)
    try:
        video = generate(*text, base=Stage(tiny_base, schedule=s_base),
                         ssr=[Stage(tiny_ssr, schedule=s_ssr)], steps=2, frames=2,
                         progress=False)
    finally:
        h.remove()
    assert video.shape == (2, 3, 2, 32, 32)
    assert seen == [(999, ssr_space.preset("S", 32)), (499, ssr_space.preset("B", 32))]


def test_schedule_load_cascade_and_api_errors(run_dir, tiny_base, text, space):
    base, _ = load_cascade(run_dir, schedules=["S:0-500,B:500-1000"])
    assert base.arch is None
    assert base.schedule.archs() == [base.space.preset("S"), base.space.preset("B")]
    assert base.schedule.label == "S@0-500+B@500-1000"
    sched = resolve_schedule("S:0-1000", space, 1000)
    with pytest.raises(ValueError, match="not both"):
        sample(tiny_base, *text, arch=space.preset("S"), schedule=sched, steps=1, **KW)
    with pytest.raises(ScheduleError, match="1000 training timesteps"):
        sample(tiny_base, *text, schedule=sched, steps=1,
               diffusion=DiffusionConfig(num_train_timesteps=500), **KW)
    with pytest.raises(TypeError, match="extracted model"):
        sample(sned.extract(tiny_base, space.preset("S")), *text, schedule=sched, steps=1, **KW)
    assert isinstance(Schedule.single(space.preset("S"), 1000), Schedule)
