"""DiffNAS training stages run through the Trainer: EMA, checkpoints, exact resume, β."""

import json

import pytest
import torch
from safetensors.torch import load_file

import sned
from sned.diffnas.space import StageSpace
from sned.diffnas.student import init_student, teacher_arch
from sned.diffnas.tasks import BlockDistillTask, JointLossTask, beta_at, run_config, train
from sned.diffusion import DiffusionConfig
from sned.data.config import DataConfig
from sned.train.trainer import Trainer

# the teacher stands for a trained model: random (not zero-initialised) residual outputs
SMALL = ["frames=2", "resolutions=[16]", "model_channels=16", "heads=[1,2,2]",
         "time_embed_dim=32", "zero_init_residual=false"]


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    sup = sned.build_supernet("tiny-base", SMALL)
    model = sned.extract(sup, sned.search_space(sup.config).preset("B")).eval()
    return model.requires_grad_(False)


def _retrain_task(teacher, steps=4, schedule="linear"):
    arch = teacher_arch(teacher)
    sub = sned.search_space(teacher.config).preset("S")
    model = sned.extract(init_student(teacher), sub).train().requires_grad_(True)
    run = run_config(teacher.config, DiffusionConfig(), DataConfig(num_videos=8), steps=steps,
                     batch_size=2, lr=1e-3, seed=3, device="cpu", ema_decay=0.9,
                     exact_freeze=False)
    return JointLossTask(run, teacher, arch, model, schedule)


def _rows(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _same(a, b, name):
    ta, tb = load_file(a / name), load_file(b / name)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{name}: {k} differs"


def test_retrain_resumed_mid_run_equals_a_straight_run(teacher, tmp_path):
    straight = train(_retrain_task(teacher), tmp_path / "a", log=lambda m: None)
    assert straight.ema is not None and straight.step == 4
    half = Trainer(_retrain_task(teacher).run, tmp_path / "b", progress=False,
                   task=_retrain_task(teacher)).fit(2)
    assert half.step == 2
    logs = []
    resumed = train(_retrain_task(teacher), tmp_path / "b", log=logs.append)
    assert logs == [f"diffnas: resuming {tmp_path / 'b'} from its last checkpoint"]
    assert resumed.step == 4
    a, b = (tmp_path / x / "checkpoints" / "latest" for x in "ab")
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        _same(a, b, name)
    rows_a, rows_b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    for key in ("loss", "beta", "distill_loss", "diffusion_loss"):
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b]
    # EMA differs from the raw weights after training (it is really kept)
    raw, ema = (load_file(a / n) for n in ("model.safetensors", "ema.safetensors"))
    assert any(not torch.equal(raw[k], ema[k]) for k in ema)


def test_joint_loss_rows_beta_falls_and_teacher_stays_frozen(teacher, tmp_path):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train(_retrain_task(teacher, steps=5, schedule="cosine"), tmp_path / "r", log=lambda m: None)
    rows = _rows(tmp_path / "r")
    betas = [r["beta"] for r in rows]
    assert betas == pytest.approx([beta_at(s, 5, "cosine") for s in range(5)])
    assert betas[0] == 1.0 and betas[-1] == pytest.approx(0.0, abs=1e-12)
    for r in rows:
        assert r["loss"] == pytest.approx(r["beta"] * r["distill_loss"]
                                          + (1 - r["beta"]) * r["diffusion_loss"], rel=1e-5)
    # at β = 1 the step's loss is the distillation loss alone, and it is > 0 for preset S
    assert rows[0]["loss"] == pytest.approx(rows[0]["distill_loss"]) and rows[0]["loss"] > 0
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_block_distill_draws_follow_teacher_prob_and_train_only_drawn_weights(teacher, tmp_path):
    arch = teacher_arch(teacher)
    spaces = [StageSpace(teacher.config, teacher.specs, arch, st, teacher.config.frames)
              for st in teacher.stages]
    run = run_config(teacher.config, DiffusionConfig(), DataConfig(num_videos=8), steps=2,
                     batch_size=2, lr=1e-3, seed=0, device="cpu", ema_decay=0.0,
                     exact_freeze=True)
    for prob, want in ((0.0, 1), (1.0, 2)):
        task = BlockDistillTask(run, teacher, arch, init_student(teacher), spaces, prob)
        for step in range(3):
            assert all(len(c) == want for c in task.draws(step))
            assert task.draws(step) == task.draws(step)  # a pure function of the step
            if want == 2:
                assert all(c[1] == sp.teacher for c, sp in zip(task.draws(step), spaces))
    start = {k: v.clone() for k, v in task.build_model().state_dict().items()}
    trainer = train(task, tmp_path / "s", log=lambda m: None)
    rows = _rows(tmp_path / "s")
    assert len(rows) == 2 and len(rows[0]["stage_losses"]) == 2 * len(spaces)
    after = trainer.model.state_dict()
    # exact freeze: weights no drawn candidate used stay bitwise put; the drawn ones move
    untouched = [k for k in after if torch.equal(after[k], start[k])]
    assert untouched and len(untouched) < len(after)
