"""CUDA options decided on any machine: cuBLAS determinism, TF32, sampling precision."""

import os

import torch

from sned.device import (CUBLAS_WORKSPACE, apply_tf32, deterministic_env, sampling_autocast,
                         tf32_flags)
from sned.pipelines.sampling import _amp_dtype
from sned.train.config import load_run_config
from sned.train.trainer import Trainer


def test_deterministic_mode_sets_the_cublas_workspace_unless_the_user_did():
    assert deterministic_env(True, {}) == {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE}
    assert deterministic_env(True, {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == {}
    assert deterministic_env(False, {}) == {}


def test_tf32_is_on_by_default_on_cuda_only():
    assert tf32_flags(True, "cuda") == {"matmul": True, "cudnn": True}
    assert tf32_flags(False, "cuda") == {"matmul": False, "cudnn": False}
    assert tf32_flags(True, "cpu") is None
    assert load_run_config("tiny-base").train.allow_tf32 is True
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        apply_tf32({"matmul": False, "cudnn": False})
        apply_tf32(None)  # CPU: nothing changes
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        apply_tf32(tf32_flags(True, "cuda"))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_sampling_is_bf16_by_default_on_cuda_and_fp32_on_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert sampling_autocast("auto", cuda) == "bf16" and sampling_autocast("auto", cpu) is None
    assert sampling_autocast("fp32", cuda) is None and sampling_autocast("bf16", cpu) == "bf16"
    assert _amp_dtype("auto", cuda) == torch.bfloat16 and _amp_dtype("auto", cpu) is None
    assert _amp_dtype(None, cuda) is None


def test_trainer_in_deterministic_mode_sets_the_cublas_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    run = load_run_config("tiny-base", ["train.deterministic=true", "model.frames=2",
                                        "data.num_videos=4"])
    try:
        trainer = Trainer(run, tmp_path / "run", progress=False)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert trainer.model.gradient_checkpointing is False  # auto: tiny-base fits the RAM
    finally:
        torch.use_deterministic_algorithms(False)


def test_weights_cast_once_give_the_same_samples_as_autocast_casting_every_step():
    import sned
    from sned.device import matmul_weights_in
    from sned.pipelines.sampling import sample

    torch.manual_seed(0)
    supernet = sned.build_supernet("tiny-base").eval()
    space = sned.search_space("tiny-base")
    model = sned.extract(supernet, space.preset("S"))
    text, mask = torch.randn(1, 8, model.config.text_dim), torch.ones(1, 8, dtype=torch.bool)
    kw = dict(steps=3, seed=1, frames=2, resolution=16, progress=False, dtype="bf16")
    fp32 = {n: p.detach().clone() for n, p in model.named_parameters()}
    with matmul_weights_in(model, None):  # fp32 / None: nothing changes
        assert all(p.dtype == torch.float32 for p in model.parameters())
    cast = sample(model, text, mask, **kw)  # casts once (kept on the extracted model)
    with matmul_weights_in(model, torch.bfloat16, keep=True):
        assert model.time_embed[0].weight.dtype == torch.bfloat16
        assert model.null_text.dtype == torch.float32  # not a linear / conv weight
    for n, p in model.named_parameters():  # the fp32 weights are back, unchanged
        assert p.dtype == torch.float32 and torch.equal(p, fp32[n]), n
    from sned import device
    real = device.matmul_weights_in
    try:  # the previous behaviour: autocast casts the fp32 weights in every step
        import sned.pipelines.sampling as sampling
        sampling.matmul_weights_in = lambda m, d, keep=False: real(m, None)
        per_step = sample(model, text, mask, **kw)
    finally:
        sampling.matmul_weights_in = real
    assert torch.equal(cast, per_step)


def test_sampling_casts_the_weights_once_not_in_every_step():
    """Op census of bf16 sampling (CPU autocast): with the weights cast once, a denoising step
    casts none of the linear / conv weights and biases — autocast's casts per step drop by
    at least their number (the rest are activations)."""
    import sned
    import sned.pipelines.sampling as sampling
    from sned import device
    from sned.pipelines.sampling import sample
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    supernet = sned.build_supernet("tiny-base", ["frames=2"]).eval()
    model = sned.extract(supernet, sned.search_space("tiny-base").preset("S"))
    text = torch.randn(1, 8, model.config.text_dim)
    matmul = [p for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
              for p in (m.weight, m.bias) if p is not None]

    def casts_per_step(steps: int) -> float:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            sample(model, text, steps=steps, seed=0, progress=False, dtype="bf16")
        return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")

    real = device.matmul_weights_in
    casts_per_step(1)  # the extracted model keeps its bf16 copies from its first call on
    once = casts_per_step(3) - casts_per_step(2)  # one step's casts (set-up cancels)
    try:
        sampling.matmul_weights_in = lambda m, d, keep=False: real(m, None)
        every = casts_per_step(3) - casts_per_step(2)
    finally:
        sampling.matmul_weights_in = real
    assert len(matmul) > 50
    assert every - once >= len(matmul)  # measured: 25 vs 281 casts per step
