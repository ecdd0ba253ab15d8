"""Training timesteps biased towards high noise (``diffusion.high_noise_share`` /
``high_noise_from``, issue 31): the distribution drawn, the default's bitwise equality with a
plain uniform draw, the trainer's use of it, and clear errors for bad values."""

import pytest
import torch

from sned.diffusion import DiffusionConfig, Objective


def test_default_draws_exactly_the_uniform_timesteps():
    got = Objective(DiffusionConfig()).sample_timesteps(64, torch.Generator().manual_seed(3))
    ref = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, ref)


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_share_of_timesteps_lands_in_the_band(share):
    """Density: (1 − p)/T everywhere plus p/(T − from) on [from, T) — so P(t ≥ 750) is
    p + (1 − p)/4, and the band and the rest are each uniform."""
    cfg = DiffusionConfig(high_noise_share=share, high_noise_from=750)
    t = Objective(cfg).sample_timesteps(40_000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 999
    high = t >= 750
    expected = share + (1 - share) * 0.25
    assert abs(float(high.float().mean()) - expected) < 0.01
    band = t[high].float()
    assert abs(float(band.mean()) - 874.5) < 3          # uniform on [750, 1000)
    if share < 1:
        assert abs(float(t[~high].float().mean()) - 374.5) < 6  # uniform on [0, 750)
    else:
        assert not bool((~high).any())


def test_trainer_draws_its_timesteps_from_the_objective(tmp_path):
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    run = load_run_config("tiny-base", ["model.frames=2", "model.resolutions=[16]",
                                        "train.batch_size=8", "diffusion.high_noise_share=1",
                                        "diffusion.high_noise_from=900"])
    tr = Trainer(run, tmp_path / "run", progress=False)
    video = torch.zeros(8, 3, 2, 16, 16)
    emb, mask = torch.zeros(8, 16, 384), torch.ones(8, 16, dtype=torch.bool)
    _, _, t = tr.noised_inputs(video, emb, mask, 0)
    assert int(t.min()) >= 900


@pytest.mark.parametrize("key,value,match", [
    ("high_noise_share", 1.5, "high_noise_share must be in"),
    ("high_noise_share", -0.1, "high_noise_share must be in"),
    ("high_noise_from", 1000, "high_noise_from must be in"),
    ("high_noise_from", -1, "high_noise_from must be in")])
def test_bad_values_are_named(key, value, match):
    with pytest.raises(ValueError, match=match):
        DiffusionConfig(**({"high_noise_share": 0.5} | {key: value}))


def test_band_is_checked_only_when_used():
    """A shorter schedule keeps the default band start (750) harmless while the share is 0,
    and a band the schedule does not reach is an error once it is used."""
    assert DiffusionConfig(num_train_timesteps=500).high_noise_from == 750
    with pytest.raises(ValueError, match=r"high_noise_from must be in \[0, 500\)"):
        DiffusionConfig(num_train_timesteps=500, high_noise_share=0.2)
