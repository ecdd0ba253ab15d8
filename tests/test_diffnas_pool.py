"""DiffNAS after the review: scratch students, fixed candidate pools (train what you score),
per-block clipping, the noise margin, the 1×1-kernel teacher and the uniform shrink at r."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import sned
from sned.arch import Arch, resolve
from sned.cost import model_cost
from sned.diffnas.blocks import run_stage, teacher_trace
from sned.diffnas.search import candidate_pools, choose
from sned.diffnas.space import StageSpace, shrink_block
from sned.diffnas.student import init_student, teacher_arch
from sned.diffnas.tasks import BlockDistillTask, run_config, train
from sned.diffusion import DiffusionConfig
from sned.data.config import DataConfig

# the teacher stands for a trained model: random (not zero-initialised) residual outputs
SMALL = ["frames=2", "resolutions=[16]", "model_channels=16", "heads=[1,2,2]",
         "time_embed_dim=32", "zero_init_residual=false"]


def _model(preset="B", kernel=None):
    torch.manual_seed(0)
    sup = sned.build_supernet("tiny-base", SMALL)
    arch = sned.search_space(sup.config).preset(preset)
    if kernel is not None:
        arch = Arch(arch.resolution, tuple(dataclasses.replace(b, kernel=kernel)
                                           for b in arch.blocks), arch.config)
    return sned.extract(sup, arch).eval().requires_grad_(False)


def _spaces(teacher, ratios=(1.0, 0.75, 0.5)):
    arch = teacher_arch(teacher)
    return [StageSpace(teacher.config, teacher.specs, arch, st, teacher.config.frames, ratios)
            for st in teacher.stages]


def test_one_by_one_teacher_gets_no_three_by_three_candidates():
    teacher = _model("B", kernel=1)
    for space, pool in zip(_spaces(teacher), candidate_pools(_spaces(teacher), 12, 0)):
        t_cost = space.cost(space.teacher)
        assert pool[0] == space.teacher
        assert space.size() > 12 or len(pool) == space.size()
        for cand in pool:
            assert all(b.kernel == 1 for b in cand), space.stage.name
            assert space.cost(cand).params <= t_cost.params
            assert space.cost(cand).macs <= t_cost.macs


def test_default_ratios_offer_three_widths_and_the_shrink_narrows_to_r():
    teacher = _model("B")
    cfg = teacher.config
    assert 0.75 not in cfg.ratios  # 0.75 maps to the config ratio giving the same widths
    for space in _spaces(teacher):
        for c in space.choices:
            assert all(len(rs) <= 3 for rs in c.ratios.values())
    arch = teacher_arch(teacher)
    full = model_cost(cfg, arch).macs
    macs = []
    for r in (0.75, 0.5):
        blocks = tuple(shrink_block(cfg, s, b, r) for s, b in zip(teacher.specs, arch.blocks))
        macs.append(model_cost(cfg, Arch(arch.resolution, blocks, arch.config)).macs)
    assert full > macs[0] > macs[1]


def test_scratch_student_keeps_the_teachers_stem_and_reinitialises_the_stages():
    teacher = _model("M")
    student = init_student(teacher, "scratch")
    copy = init_student(teacher, "teacher")
    arch = teacher_arch(teacher)
    layouts = resolve(student.config, arch, student.specs)
    kw = sned.example_inputs(teacher, batch=2)
    with torch.no_grad():
        _, trace = teacher_trace(teacher, kw)
        for stage, io in zip(student.stages, trace.stages):
            exact = run_stage(copy, stage, io, trace, layouts)
            fresh = run_stage(student, stage, io, trace, layouts)
            torch.testing.assert_close(exact[0], io.outputs[0], rtol=1e-5, atol=1e-5)
            assert not torch.allclose(fresh[0], io.outputs[0], atol=1e-3)
    for name, p in student.named_parameters():  # stem / embeddings / head: the teacher's
        if name.startswith(("conv_in", "conv_out", "time_embed")):
            assert torch.equal(p, copy.get_parameter(name)), name
    with pytest.raises(ValueError, match="student init"):
        init_student(teacher, "nope")


def test_pool_draws_are_balanced_pure_and_clipped_per_block(tmp_path):
    teacher = _model("B")
    spaces = _spaces(teacher)
    pools = candidate_pools(spaces, 6, 0)
    run = run_config(teacher.config, DiffusionConfig(), DataConfig(num_videos=8), steps=2,
                     batch_size=2, lr=1e-3, seed=0, device="cpu", ema_decay=0.0,
                     exact_freeze=True, grad_clip=0.0)
    torch.manual_seed(0)
    task = BlockDistillTask(run, teacher, teacher_arch(teacher), init_student(teacher, "scratch"),
                            spaces, 0.0, pools, draws_per_step=2, stage_clip=1e-3)
    for step in range(5):
        assert task.draws(step) == task.draws(step)
        for cands, pool in zip(task.draws(step), pools):
            assert len(cands) == 2 and all(c in pool for c in cands)
    counts = task.update_counts(30)  # 60 draws per block over pools of <= 6
    for c, pool in zip(counts, pools):
        assert len(c) == len(pool) and max(c) - min(c) <= 1 and min(c) >= 60 // len(pool) - 1
    trainer = train(task, tmp_path / "s", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # the norms before clipping were far above the clip; after, each block's is
        assert len(r["stage_grad_norms"]) == len(spaces)
        assert all(n > 1e-3 for n in r["stage_grad_norms"])
    student = trainer.model
    for space in spaces:
        grads = [p.grad for m in student.stage_modules(space.stage) for p in m.parameters()
                 if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                         for g in grads]))
            assert norm <= 1e-3 * 1.01


def test_margin_accepts_within_k_paired_standard_errors():
    rows = [{"macs": 10, "params": 5, "eval_loss": 0.50, "paired_se": 0.0},
            {"macs": 4, "params": 2, "eval_loss": 0.52, "paired_se": 0.01},
            {"macs": 6, "params": 3, "eval_loss": 0.51, "paired_se": 0.02}]
    assert choose(rows, 0) == 0  # the paper's rule: nothing is <= the reference
    assert choose(rows, 0, margin=1.0) == 2  # 0.51 <= 0.50 + 0.02; 0.52 > 0.50 + 0.01
    assert choose(rows, 0, margin=2.0) == 1


def test_per_sample_val_loss_is_paired_and_averages_to_the_proxy():
    from sned.search.proxy import heldout_proxy

    model = _model("S")
    a = heldout_proxy(model, DiffusionConfig(), 16, n_videos=6, batch=4)
    b = heldout_proxy(model, DiffusionConfig(), 16, n_videos=4, batch=4, skip=6, seed=1)
    per = a.per_sample(None)
    assert per.shape == (6,) and a(None) == pytest.approx(float(per.mean()), rel=1e-6)
    assert b.source["skip"] == 6 and b.xt.shape[0] == 4
    # the second set is clips 6.. of the same held-out draw: none equals one of the first six
    from sned.data.heldout import held_out_set

    clips = held_out_set(DataConfig(), 10, 2, 16).tensor()[0]
    for x in clips[6:]:
        assert not any(torch.equal(x, y) for y in clips[:6])
