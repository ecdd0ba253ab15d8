"""Compiled sampling without compiling (fast): the mode chosen per device, a clear error when
inductor cannot build kernels, cuDNN benchmarking scoped to the sampling loop, CUDA-graph
outputs copied before the next replay, and the pipeline's compile_models wiring. The compiling
tests themselves (outputs within 1e-4 / 1e-3 of eager) are in tests/test_compile.py (slow)."""

import copy

import pytest
import torch
from diffusers import DDIMScheduler

import sned
import sned.pipelines.sampling as sampling
from sned.cli import main
from sned.device import repeated_shapes
from sned.pipelines import SnedPipeline, compile_model, sample
from sned.pipelines import compiled


@pytest.fixture(scope="module")
def static_s():
    torch.manual_seed(0)
    supernet = sned.build_supernet("tiny-base", ["frames=2"])
    for p in supernet.parameters():  # zero-init residual outputs: give them weights
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return sned.extract(supernet, sned.search_space(supernet.config).preset("S", 16))


def test_auto_mode_is_cuda_graphs_on_cuda_and_the_default_on_cpu():
    assert compiled.resolve_mode("auto", torch.device("cuda")) == "reduce-overhead"
    assert compiled.resolve_mode("auto", torch.device("cpu")) is None
    assert compiled.resolve_mode("default", torch.device("cuda")) is None
    assert compiled.resolve_mode("max-autotune", torch.device("cpu")) == "max-autotune"
    with pytest.raises(ValueError, match="'fast'"):
        compiled.resolve_mode("fast", torch.device("cpu"))


def test_compile_model_passes_the_resolved_mode(static_s, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    model = compile_model(static_s)
    assert seen == [{"dynamic": False, "mode": None}]  # CPU: inductor's default mode
    assert not compiled.uses_cuda_graphs(model)  # CPU: no graphs whatever the mode
    del model.__dict__["_sned_compile_mode"]


def test_no_compiler_is_one_clear_line_before_anything_loads(static_s, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(compiled.CompileUnavailable, match="C\\+\\+ compiler"):
        compile_model(static_s)
    assert "_sned_compile_mode" not in static_s.__dict__
    folder = tmp_path / "model"
    sned.save_pretrained(static_s, folder)
    out = tmp_path / "out"
    code = main(["sample", str(folder), "--prompt", "a red circle", "--steps", "2",
                 "--formats", "png", "--out", str(out), "--compile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--compile" in err[0] and "C++" in err[0]
    assert not any(out.glob("**/*.png"))


def test_cudnn_benchmark_is_on_inside_and_restored_after():
    before = torch.backends.cudnn.benchmark
    with repeated_shapes(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    with repeated_shapes(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == before
    torch.use_deterministic_algorithms(True)
    try:
        with repeated_shapes(torch.device("cuda")):
            assert torch.backends.cudnn.benchmark == before
    finally:
        torch.use_deterministic_algorithms(False)


def _static_buffer(model):
    """``model`` whose forward, like a CUDA-graph replay, writes every output into the same
    tensor (``model.buffer``)."""
    model = copy.deepcopy(model)
    real, buffer = model.forward, []

    def forward(*args, **kw):
        out = real(*args, **kw)
        if not buffer:
            buffer.append(torch.empty_like(out))
        return buffer[0].copy_(out)
    model.forward, model.buffer = forward, buffer
    return model


def test_sampling_copies_graph_outputs_before_the_next_replay(static_s, monkeypatch):
    """With CUDA graphs each step is marked for the graph trees and the scheduler gets a
    copy of the output, never the graph's buffer (the next replay overwrites it); the
    samples are the eager model's, exactly."""
    emb = torch.randn(1, static_s.config.text_len, static_s.config.text_dim)
    kw = dict(steps=4, scheduler="dpm", guidance_scale=1.0, seed=0, progress=False)
    ref = sample(static_s, emb, **kw)
    marks, handed = [], []
    real_make = sampling.make_scheduler

    def recording(*a, **k):
        sched = real_make(*a, **k)
        step = sched.step
        sched.step = lambda out, *r, **q: (handed.append(out.data_ptr()), step(out, *r, **q))[1]
        return sched
    monkeypatch.setattr(sampling, "make_scheduler", recording)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for graphs in (True, False):
        monkeypatch.setattr(sampling, "uses_cuda_graphs", lambda model: graphs)
        model, handed[:] = _static_buffer(static_s), []
        assert torch.equal(sample(model, emb, **kw), ref)
        buffer = model.buffer[0].data_ptr()
        assert (buffer in handed) is not graphs  # graphs: copies only; eager: fp32 as is
    assert len(marks) == 4


def test_pipeline_compile_models_compiles_each_denoiser_once(static_s, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    pipe = SnedPipeline(static_s, DDIMScheduler())
    assert pipe.compile_models() is pipe
    pipe.compile_models()
    assert seen == [{"dynamic": False, "mode": None}]
    assert static_s.__dict__.pop("_sned_compile_mode") == "default"
