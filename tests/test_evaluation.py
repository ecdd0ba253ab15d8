"""Held-out prompts, caption-accuracy intervals, cascade consistency and the shared
preset-evaluation routine (`sned evaluate` and the quickstart)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sned
from sned.data.synthetic import (COLORS, DIRECTIONS, HELD_OUT, SHAPES, SyntheticVideoDataset,
                                 held_out_prompts, sample_prompts)
from sned.metrics.caption import parse_caption, wilson_interval
from sned.metrics.consistency import psnr, ssr_consistency


def _triples(caption: str) -> list[tuple[str, str, str]]:
    out = []
    for part in caption.split(" and "):
        a = parse_caption(part)
        out.append((a["color"], a["shape"], a["direction"]))
    return out


def test_held_out_prompts_are_never_produced_by_the_training_split():
    prompts = held_out_prompts()
    assert len(prompts) >= 32 and len(set(prompts)) == len(prompts)
    held = {t for p in prompts for t in _triples(p)}
    assert held == set(HELD_OUT)
    train = set()
    for kw in ({}, {"max_objects": 3}):
        ds = SyntheticVideoDataset(3000, 4, 16, seed=0, **kw)
        for i in range(len(ds)):
            train.update((o["color"], o["shape"], o["direction"])
                         for o in ds.attributes(i)["objects"])
    train.update(t for p in sample_prompts(2000, seed=1) for t in _triples(p))
    assert not train & held
    assert len(train) == len(COLORS) * len(SHAPES) * len(DIRECTIONS) - len(HELD_OUT)
    # every single attribute value is still taught
    for i, values in enumerate((COLORS, SHAPES, DIRECTIONS)):
        assert {t[i] for t in train} == set(values) == {t[i] for t in held}
    # the held-out split draws only held-out combinations
    ho = SyntheticVideoDataset(200, 4, 16, seed=5, split="held_out")
    assert {(a["color"], a["shape"], a["direction"]) for a in map(ho.attributes, range(200))} \
        <= set(HELD_OUT)
    with pytest.raises(ValueError, match="split"):
        SyntheticVideoDataset(2, 4, 16, split="test")


def test_wilson_interval_solves_its_defining_equation():
    z = 1.959964
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 36), (1, 1), (50, 200)]:
        lo, hi = wilson_interval(k, n)
        p = k / n
        assert 0 <= lo <= p <= hi <= 1
        for bound in (lo, hi):
            if 0 < bound < 1:
                assert math.isclose((p - bound) ** 2, z * z * bound * (1 - bound) / n,
                                    rel_tol=1e-9, abs_tol=1e-12)
    # a published value (Newcombe 1998, table I: 81/263 → 0.2553–0.3662)
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_ssr_consistency_is_psnr_of_the_downsampled_output():
    from sned.data.transforms import resize_video
    from sned.video_io import to_uint8

    g = torch.Generator().manual_seed(0)
    # a high-resolution video with values in [30, 200] / 255 (no clipping below)
    high = torch.nn.functional.interpolate(torch.rand(6, 3, 4, 4, generator=g), size=(16, 16),
                                           mode="bilinear").reshape(2, 3, 3, 16, 16)
    high = (30 + 170 * high) / 127.5 - 1                         # (N, C, T, H, W) in [-1, 1]
    low = resize_video(high, 8)
    out_u8, in_u8 = to_uint8(high), to_uint8(low)
    # an SSR output whose downsampling is its input: only 8-bit rounding remains
    assert np.all(ssr_consistency(out_u8, in_u8) > 45)
    # brighten the output by d: the (normalised, linear) downsampling carries d over exactly,
    # so the PSNR is 20 log10(1 / d)
    d = 20
    brighter = (out_u8.astype(np.int64) + d).astype(np.uint8)
    np.testing.assert_allclose(ssr_consistency(brighter, in_u8), 20 * np.log10(255 / d),
                               atol=0.3)
    assert float(psnr(torch.zeros(1, 4), torch.full((1, 4), 0.1))) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="differ"):
        ssr_consistency(out_u8[:1], in_u8)


def test_evaluate_preset_rows_for_every_stage(tiny_base, tiny_ssr):
    from sned.diffusion import DiffusionConfig
    from sned.app.evaluation import EvalSettings, evaluate_preset
    from sned.pipelines.loading import Denoiser

    bspace, sspace = sned.search_space("tiny-base"), sned.search_space("tiny-ssr")
    base = Denoiser(tiny_base, bspace.preset("S"), DiffusionConfig(), "mem", "S")
    ssr = [Denoiser(tiny_ssr, sspace.preset("S", r), DiffusionConfig(), "mem", "S")
           for r in (32, 64)]
    seen = []
    settings = EvalSettings(metrics=("caption", "consistency", "latency"), n_videos=2, runs=2,
                            frames=2, steps=2, batch=2, every_stage=True, latency_repeats=1,
                            progress=False)
    rows = evaluate_preset("S", base, ssr, settings, on_stage=lambda c: seen.append(c.index))
    assert [r["resolution"] for r in rows] == [16, 32, 64] and seen == [0, 1, 2]
    for r in rows:
        assert r["caption_n"] == 4
        for attr in ("color", "shape", "direction", "all"):
            lo, hi = r["caption_ci"][attr]
            assert lo <= r[f"caption_{attr}"] <= hi
        assert r["latency_ms"] > 0
    assert rows[0]["ssr_psnr_db"] is None and all(r["ssr_psnr_db"] > 0 for r in rows[1:])
    for r in rows[1:]:  # 2 runs x 2 videos, and a 95 % interval of their mean
        lo, hi = r["ssr_psnr_ci"]
        assert r["ssr_psnr_n"] == 4 and lo < r["ssr_psnr_db"] < hi
    # the same SSR subnet serves both steps: its weights count once, its MACs per step
    assert rows[1]["cascade_params"] == rows[0]["params"] + rows[1]["params"]
    assert rows[2]["cascade_params"] == rows[1]["cascade_params"]
    assert rows[2]["cascade_macs"] == sum(r["macs"] for r in rows)
    assert rows[-1]["sample_s"] > 0 and rows[0]["sample_s"] is None
    only_final = evaluate_preset("S", base, ssr, EvalSettings(
        metrics=("caption",), n_videos=1, frames=2, steps=1, progress=False))
    assert [r["resolution"] for r in only_final] == [64]


def test_quickstart_report_has_intervals_and_consistency(tmp_path):
    import json
    import time

    from sned.app.quickstart import SECTIONS, Budget, Quickstart, write_quickstart_report

    for kind in ("base", "ssr"):
        (tmp_path / "runs" / kind).mkdir(parents=True)
        (tmp_path / "runs" / kind / "metrics.jsonl").write_text(
            "\n".join(json.dumps({"step": i, "loss": 1.0 / i}) for i in range(1, 5)))
    rows = []
    for res, psnr_db in ((16, None), (32, 31.5), (64, 28.25)):
        rows.append({"preset": "S", "resolution": res, "params": 10**6, "macs": 10**9,
                     "val_loss": 0.1, "val_loss_init": 1.0, "caption_all": 0.25,
                     "caption_color": 0.75, "caption_shape": 0.5, "caption_direction": 0.5,
                     "caption_n": 36, "ssr_psnr_db": psnr_db, "prompts": "train",
                     "caption_ci": {"all": [0.14, 0.41], "color": [0.59, 0.86],
                                    "shape": [0.34, 0.66], "direction": [0.34, 0.66]}})
    qs = Quickstart(tmp_path, Budget(60, time.monotonic()), held_out_prompts(), rows,
                    {16: [], 32: [], 64: []})
    write_quickstart_report(qs)
    md = (tmp_path / "report.md").read_text()
    assert "## Does the video follow its prompt? Caption accuracy per attribute" in md
    assert ("| train | S | 16 | 75% [59%–86%] | 50% [34%–66%] | 50% [34%–66%] | 25% [14%–41%] "
            "| 36 |") in md
    assert "## Cascade consistency per SSR stage" in md and "| S | 64 | 28.25 |" in md
    assert len(SECTIONS) >= 5 and (tmp_path / "report.html").exists()


def test_per_timestep_profile_cli_matches_the_proxy_per_bucket(tmp_path, capsys):
    """`sned evaluate RUN --per-timestep`: every preset on the same pairs, bucket means equal
    the proxy's per-pair losses grouped by timestep, B's paired difference is exactly 0."""
    import json

    from sned.cli import main
    from sned.pipelines.loading import load_denoiser
    from sned.search.proxy import heldout_proxy
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(load_run_config("tiny-base", ["model.frames=2", "data.num_videos=8",
                                          "train.batch_size=2", "train.warmup_steps=0"]),
            run, progress=False).fit(2)
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--per-timestep", "--metrics", "none", "--presets",
                 "B,S", "--n-videos", "4", "--pairs-per-clip", "3", "--buckets", "4",
                 "--out", str(out)]) == 0
    prof = json.loads((out / "per_timestep.json").read_text())
    assert prof["buckets"] == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    assert [a["label"] for a in prof["archs"]] == ["S", "B"] and prof["reference"] == "B"
    assert prof["pairs"] == 12 and (out / "per_timestep.png").is_file()
    assert "Per-timestep validation loss" in (out / "report.md").read_text()
    den = load_denoiser(run)
    proxy = heldout_proxy(den.model, den.diffusion, 16, n_videos=4, pairs_per_clip=3)
    s = proxy.per_sample(den.space.preset("S"))
    b = proxy.per_sample(den.space.preset("B"))
    for row, losses in zip(prof["archs"], (s, b)):
        assert sum(x["n"] for x in row["buckets"]) == 12
        for bucket in row["buckets"]:
            sel = (proxy.t >= bucket["lo"]) & (proxy.t < bucket["hi"])
            assert bucket["mean"] == pytest.approx(float(losses[sel].double().mean()), rel=1e-5)
            if row["label"] == "B":
                assert bucket["diff"]["mean"] == 0.0
            else:
                ref = float((losses[sel] - b[sel]).double().mean())
                assert bucket["diff"]["mean"] == pytest.approx(ref, rel=1e-4, abs=1e-7)
    assert main(["evaluate", str(run), "--metrics", "none", "--out", str(tmp_path / "e2")]) == 2
    assert "nothing to measure" in capsys.readouterr().err
