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
