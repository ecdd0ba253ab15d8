"""Latency measurement and the per-device latency table."""

from __future__ import annotations

import json
import time

import pytest
import torch

import sned
from sned.metrics.latency import (LatencyTable, arch_key, denoiser_latency, device_name,
                                  latency_stats, measure_latency)


class FakeClock:
    """Each call to the timed function advances the clock by the next duration (seconds)."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.t

    def work(self) -> None:
        self.t += self.durations[self.calls]
        self.calls += 1


def test_median_with_fake_clock():
    # 2 warm-up calls (huge, ignored) then 5 timed calls; one outlier does not move the median
    clock = FakeClock([9.0, 9.0, 0.003, 0.001, 0.002, 0.500, 0.004])
    ms = measure_latency(clock.work, warmup=2, repeats=5, timer=clock)
    assert clock.calls == 7
    assert ms == pytest.approx(3.0)
    clock = FakeClock([0.001, 0.002, 0.003, 0.004])
    stats = latency_stats(clock.work, warmup=0, repeats=4, timer=clock)
    assert stats.median_ms == pytest.approx(2.5)
    assert (stats.min_ms, stats.max_ms) == pytest.approx((1.0, 4.0))
    with pytest.raises(ValueError):
        measure_latency(clock.work, repeats=0)


def test_median_of_sleeps_is_robust():
    ms = measure_latency(lambda: time.sleep(0.005), warmup=1, repeats=5)
    assert 4.5 <= ms < 200.0  # never below the sleep; generous upper bound for busy machines


def test_denoiser_latency(tiny_base):
    space = sned.search_space("tiny-base")
    inputs = sned.example_inputs(tiny_base, batch=1, resolution=16)
    tiny_base.train()
    ms = denoiser_latency(tiny_base, space.preset("S", 16), inputs, warmup=1, repeats=2)
    assert tiny_base.training  # mode restored
    tiny_base.eval()
    assert 0.0 < ms < 60_000
    assert denoiser_latency(tiny_base, None, inputs, warmup=0, repeats=1) > 0.0


def test_table_round_trip_and_reuse(tmp_path):
    space = sned.search_space("tiny-base")
    arch = space.preset("S", 16)
    path = tmp_path / "lat" / "table.json"
    table = LatencyTable(path, device="cpu")
    calls = []

    def measure():
        calls.append(1)
        return 12.5

    key = ("tiny-base", arch, 16, 8, 1, torch.float32)
    assert table.get(*key) is None
    assert table.get_or_measure(*key, measure) == 12.5
    assert table.get_or_measure(*key, measure) == 12.5
    assert len(calls) == 1 and path.exists()

    again = LatencyTable.load(path, device="cpu")  # a new process would see the same
    assert len(again) == 1 and again.get(*key) == 12.5
    assert again.get_or_measure(*key, measure) == 12.5 and len(calls) == 1
    # every key field matters
    assert again.get("tiny-base", arch, 32, 8, 1, torch.float32) is None
    assert again.get("tiny-base", arch, 16, 8, 2, torch.float32) is None
    assert again.get("tiny-base", arch, 16, 8, 1, torch.bfloat16) is None
    assert again.get("tiny-base", space.preset("M", 16), 16, 8, 1, torch.float32) is None
    assert again.get("tiny-base", arch.to_dict(), 16, 8, 1, "float32") == 12.5

    data = json.loads(path.read_text())
    (dev, entries), = data["devices"].items()
    assert dev == device_name("cpu") and dev.startswith("cpu:")
    assert f"threads={torch.get_num_threads()}" in dev
    (entry,) = entries.values()
    assert entry["ms"] == 12.5 and entry["arch"] == arch.to_dict() and entry["resolution"] == 16


def test_keys_differ_by_device(tmp_path):
    path = tmp_path / "table.json"
    key = ("tiny-base", None, 16, 8, 1, "float32")
    cpu = LatencyTable(path, device_label="cpu:test-a")
    cpu.get_or_measure(*key, lambda: 3.0)
    gpu = LatencyTable(path, device_label="cuda:test-b")
    assert gpu.get(*key) is None  # measured on other hardware: not reused
    assert gpu.get_or_measure(*key, lambda: 0.5) == 0.5
    assert LatencyTable.load(path, device_label="cpu:test-a").get(*key) == 3.0
    assert LatencyTable.load(path, device_label="cuda:test-b").get(*key) == 0.5
    assert gpu.devices() == ["cpu:test-a", "cuda:test-b"]


def test_latency_fn_for_search(tmp_path):
    space = sned.search_space("tiny-base")
    table = LatencyTable(tmp_path / "t.json", device_label="cpu:fake", autosave=False)
    seen = []
    fn = table.latency_fn("tiny-base", 16, 8, 1, "float32",
                          lambda a: seen.append(a) or space.cost(a).macs / 1e8)
    a = space.preset("M", 16)
    assert fn(a) == fn(a) and len(seen) == 1
    assert not (tmp_path / "t.json").exists()
    table.save()
    assert LatencyTable.load(tmp_path / "t.json", device_label="cpu:fake").get(
        "tiny-base", a, 16, 8, 1, "float32") == fn(a)


def test_arch_key_is_stable():
    space = sned.search_space("tiny-base")
    a = space.preset("S", 16)
    assert arch_key(a) == arch_key(a.to_dict()) == arch_key(sned.Arch.from_dict(a.to_dict()))
    assert arch_key(a) != arch_key(space.preset("M", 16))
    assert arch_key(None) == "full" and arch_key("model-folder") == "model-folder"


def test_bad_table_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatencyTable(p)
    with pytest.raises(FileNotFoundError):
        LatencyTable.load(tmp_path / "missing.json")
