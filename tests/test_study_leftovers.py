"""Issue 12's left-over defects, on one tiny run trained to raised floors
(``train.final_min_ratio=0.6``, ``final_min_keep=0.7``) with non-default synthetic data:

- presets (and searches) of a trained run lie inside the floors it trained; an arch outside is
  refused naming the value and the floor;
- ``sned search`` loads the checkpoint once;
- ``train.fixed_arch`` takes the preset forms of the one parser (fractions too);
- extracted folders record the training data config, which held-out evaluation then uses.
"""

import json
import math

import pytest

import sned.cli.evaluate
import sned.pipelines.loading
from sned.arch import Arch, ArchError
from sned.cli import main
from sned.config import ConfigError
from sned.data.heldout import held_out_set, resolve_data
from sned.pipelines.loading import load_denoiser
from sned.space import SearchSpace
from sned.train.arch_sampler import ArchSampler
from sned.data.config import DataConfig
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

FAST = ["model.frames=2", "data.num_videos=16", "train.batch_size=2", "train.warmup_steps=0",
        "train.ema_decay=0.99", "train.batch_size_per_resolution={32: 1}"]
FLOORS = ["train.final_min_ratio=0.6", "train.final_min_keep=0.7"]
DATA = ["data.seed=3", "data.max_objects=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("floors") / "run"
    Trainer(load_run_config("tiny-base", FAST + FLOORS + DATA), folder, progress=False).fit(1)
    return folder


def inside(space: SearchSpace, arch: Arch, ratio: float, keep: float) -> bool:
    """Every active layer's ratio >= ``ratio`` and every block keeping >= ceil(keep × n)."""
    from sned.space import active_slots

    for spec, b in zip(space.specs, arch.blocks):
        if len(b.keep) < math.ceil(keep * len(spec.components) - 1e-9):
            return False
        active = active_slots(spec, b.keep)
        if any(r < ratio - 1e-9 for slot, r in b.ratios if slot in active):
            return False
    return True


# ----------------------------------------------------------------------------- trained floors
def test_presets_of_a_run_lie_inside_its_trained_floors(run_dir):
    default = SearchSpace("tiny-base")
    assert not inside(default, default.preset("S"), 0.6, 0.7)  # the defect: 0.4 floors
    for preset in ("S", "M", "0.5", "L", "B"):
        den = load_denoiser(run_dir, preset=preset, resolution=32)
        assert den.arch.resolution == 32
        assert inside(default, den.arch, 0.6, 0.7), preset
    s, b = (load_denoiser(run_dir, preset=p).arch for p in "SB")
    assert default.cost(s).params < default.cost(b).params  # still a smaller subnet
    # the trainer's space is the same: a fixed-arch run of S trains the S the loader picks
    run = load_run_config("tiny-base", FAST + FLOORS + ["train.fixed_arch=S"])
    from sned.train.tasks import DiffusionTask
    assert DiffusionTask(run).sampler.fixed.blocks == s.blocks


def test_arch_outside_the_trained_floors_is_refused(run_dir, tmp_path, capsys):
    path = tmp_path / "s04.json"
    SearchSpace("tiny-base").preset("S").save(path)  # ratios down to 0.4
    with pytest.raises(ArchError, match=r"ratio 0\.4 is below the floor 0\.6"):
        load_denoiser(run_dir, arch=path)
    out = tmp_path / "x"
    assert main(["extract", str(run_dir), "--arch", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.4" in err[0] and "floor 0.6" in err[0] and str(path) in err[0]
    assert not out.exists()
    # keep floor: ratios fine, but a block keeping 2 of 4 components (floor ceil(0.7·4) = 3)
    space = SearchSpace.for_run("tiny-base", {"final_min_ratio": 0.6, "final_min_keep": 0.7})
    big = space.largest()
    i = next(i for i, s in enumerate(space.specs) if len(s.components) == 4)
    blocks = list(big.blocks)
    blocks[i] = type(blocks[i])(blocks[i].keep[:2], blocks[i].ratios)
    with pytest.raises(ArchError, match=r"keeps 2 of 4 components, below the floor 3"):
        space.check_floors(Arch(big.resolution, tuple(blocks), big.config))
    assert space.check_floors(big) is big


def test_search_loads_once_and_stays_inside_the_trained_floors(run_dir, tmp_path,
                                                               monkeypatch):
    calls = []
    real = sned.pipelines.loading.load_denoiser
    monkeypatch.setattr(sned.cli.evaluate, "load_denoiser",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    out = tmp_path / "search"
    assert main(["search", str(run_dir), "--resolution", "32", "--budget", "4",
                 "--population", "2", "--n-videos", "1", "--out", str(out)]) == 0
    assert len(calls) == 1
    space = SearchSpace("tiny-base")
    for name in ("pareto.json", "pareto_random.json"):
        points = json.loads((out / name).read_text())
        assert points
        for p in points:
            arch = Arch.from_dict(p["arch"])
            assert arch.resolution == 32 and inside(space, arch, 0.6, 0.7)


# ----------------------------------------------------------------------------- fixed_arch
@pytest.mark.parametrize("value, label, fraction", [("0.75", "0.75", 0.75), ("1", "1", 1.0),
                                                    ("0.5", "0.5", 0.5), ("M", "M", 0.6)])
def test_fixed_arch_takes_every_preset_form(value, label, fraction):
    run = load_run_config("tiny-base", FAST + [f"train.fixed_arch={value}"])
    assert run.train.fixed_arch == label
    space = SearchSpace(run.model)
    arch = ArchSampler(space, run.train).fixed
    assert arch.blocks == space.preset(fraction).blocks
    assert json.loads(json.dumps(run.to_dict()))["train"]["fixed_arch"] == label


@pytest.mark.parametrize("value", ["1.5", "0", "-0.2", "nan", "true", "[1]"])
def test_fixed_arch_bad_values_are_config_errors(value):
    with pytest.raises(ConfigError, match="train.fixed_arch"):
        load_run_config("tiny-base", FAST + [f"train.fixed_arch={value}"])


def test_cli_train_fixed_arch_bad_fraction_exits_2(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "tiny-base", "--out", str(out),
                 "train.fixed_arch=1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.fixed_arch" in err[0] and "1.5" in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- data config
def test_extracted_folder_records_the_training_data(run_dir, tmp_path):
    trained = resolve_data(run_dir)
    assert (trained.seed, trained.max_objects) == (3, 2) and trained != DataConfig()
    folder = tmp_path / "S"
    assert main(["extract", str(run_dir), "--preset", "S", "--out", str(folder)]) == 0
    assert json.loads((folder / "unet" / "config.json").read_text())["sned"]["data"]["seed"] == 3
    assert resolve_data(folder) == trained  # not the synthetic defaults
    # the held-out set of the folder is the run's (same seed and options)
    assert held_out_set(resolve_data(folder), 2, 2, 16).source == \
        held_out_set(trained, 2, 2, 16).source
    # --data still overrides
    assert resolve_data(folder, ["seed=5"]).seed == 5
    assert resolve_data(folder, ["data.max_objects=1"]).max_objects == 1
    # sned evaluate on the folder (no --presets: the model as it is) uses the run's data
    ev = tmp_path / "ev"
    assert main(["evaluate", str(folder), "--metrics", "val_loss", "--n-videos", "2",
                 "--steps", "1", "--out", str(ev)]) == 0
    table = json.loads((ev / "table.json").read_text())
    (src,) = table["real_data"]["val_loss"]
    assert (src["seed"], src["max_objects"]) == (10_000 + 1000 * 3, 2)
    assert [r["preset"] for r in table["rows"]] == ["S"]  # the card's label
