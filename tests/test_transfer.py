"""Image-to-video transfer (``train.init_from`` / ``sned train --init-from``)."""

import json
import shutil

import numpy as np
import pytest
import torch

import sned
from sned.arch import ArchError
from sned.cli import main
from sned.extract import read_model_meta, weights_file
from sned.train.transfer import TransferError, file_sha256, image_arch, transfer_weights

TINY = ["model_channels=16", "heads=[1,2,2]", "time_embed_dim=32", "resolutions=[16]"]
SMALL = [f"model.{o}" for o in TINY] + ["train.batch_size=2", "data.num_videos=8",
                                        "train.checkpoint_every=1"]


def _models(seed=0):
    torch.manual_seed(seed)
    image = sned.build_supernet("tiny-image", TINY)
    for p in image.parameters():  # any weights: the equality must not hinge on an init
        p.data.normal_(0, 0.2)
    video = sned.build_supernet("tiny-base", TINY + ["frames=3"])
    return image, video


def _per_frame(image, kw, arch):
    """The image model run on every frame of kw's clips alone: (B, C, T, H, W)."""
    b, c, t, h, w = kw["sample"].shape
    rep = lambda x: x.repeat_interleave(t, 0)
    y = image(sample=kw["sample"].transpose(1, 2).reshape(b * t, c, 1, h, w),
              timestep=rep(kw["timestep"]), encoder_hidden_states=rep(kw["encoder_hidden_states"]),
              encoder_attention_mask=rep(kw["encoder_attention_mask"]),
              **({} if arch is None else {"arch": arch}))
    return y.reshape(b, t, c, h, w).transpose(1, 2)


def _archs(space, source_cfg, n=4):
    """Presets M / L / B and random archs that the image model can mirror (image_arch)."""
    archs = [space.preset(p) for p in "MLB"]
    rng = np.random.default_rng(0)
    while len(archs) < 3 + n:
        a = space.sample(rng)
        try:
            image_arch(a, source_cfg)
        except ArchError:
            continue
        archs.append(a)
    return archs


def test_step0_video_prediction_equals_image_prediction_per_frame_for_several_archs():
    image, video = _models()
    record = transfer_weights(video, image)
    assert {n.rsplit(".", 1)[-1] for n in record.new} == {"temporal_attn", "ff"}
    assert "blocks.0.ff" in record.new  # block 0's only attention is temporal
    kw = sned.example_inputs(video, batch=2, frames=3, seed=1)
    space = sned.search_space(video.config)
    for arch in _archs(space, image.config):
        y = video(**kw, arch=arch)
        ref = _per_frame(image, kw, image_arch(arch, image.config))
        assert (y - ref).abs().max() <= 1e-5 * ref.abs().max(), arch
    # a block that keeps only its temporal attention runs its (copied) feed-forward: no mirror
    bad = space.preset("B")
    blocks = list(bad.blocks)
    blocks[4] = type(blocks[4])(("resblock", "temporal_attn"), blocks[4].ratios)
    with pytest.raises(ArchError, match="keeps only its temporal attention"):
        image_arch(type(bad)(bad.resolution, tuple(blocks), bad.config), image.config)


def test_a_static_source_fills_the_prefix_slices_and_wider_subnets_add_nothing():
    image, video = _models(seed=3)
    ispace = sned.search_space(image.config)
    iarch = ispace.preset("S")  # drops components: they start at zero output
    static = sned.extract(image, iarch)
    record = transfer_weights(video, static)
    assert any(n.endswith(("cross_attn", "spatial_attn", "resblock")) for n in record.new)
    kw = sned.example_inputs(video, batch=2, frames=3, seed=2)
    ref = _per_frame(static, kw, None)
    specs = sned.search_space(video.config).specs
    for ratios_full in (False, True):  # the source's widths, then every width at 100 %
        blocks = []
        for spec, ib in zip(specs, iarch.blocks):
            keep = tuple(c for c in spec.components if c in ib.keep or c == "temporal_attn")
            r = dict(ib.ratios)
            ratios = tuple((s, 1.0 if ratios_full or s not in r else r[s]) for s in spec.slots)
            blocks.append(sned.BlockArch(keep, ratios))
        arch = sned.Arch(iarch.resolution, tuple(blocks), video.config.name)
        y = video(**kw, arch=arch)
        assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_mismatching_sources_are_errors_naming_the_layer():
    video = sned.build_supernet("tiny-base", TINY)
    before = {k: v.clone() for k, v in video.state_dict().items()}
    cases = [(sned.build_supernet("tiny-image", TINY[1:] + ["model_channels=32"]), "layer "),
             (sned.build_supernet("tiny-ssr"), "'ssr' model"),
             (sned.build_supernet("tiny-base", TINY + ["head_dim=8", "heads=[2,4,4]"]),
              "head_dim"),
             (sned.build_supernet("tiny-base", TINY), "video model")]
    for source, match in cases:
        with pytest.raises(TransferError, match=match):
            transfer_weights(video, source)
    with pytest.raises(TransferError, match=r"blocks\.\d+\.\w+.* has no counterpart"):
        levels = ("levels=[{mult: 1, blocks: 1, components: [resblock]}, {mult: 2, blocks: 1, "
                  "components: [resblock, cross_attn]}, {mult: 3, blocks: 1, components: "
                  "[resblock, cross_attn, spatial_attn]}]")
        transfer_weights(video, sned.build_supernet("tiny-image", [*TINY, levels]))
    assert all(torch.equal(before[k], v) for k, v in video.state_dict().items())
    # a one-frame run of the video config: its temporal layers are listed, not copied
    record = transfer_weights(video, sned.build_supernet("tiny-base", TINY + ["frames=1"]))
    assert "blocks.0.temporal_attn" in record.dropped and record.notes


def test_cli_init_from_a_run_and_an_extracted_folder_then_resume_and_card(tmp_path):
    img, vid, folder = tmp_path / "img", tmp_path / "vid", tmp_path / "img-S"
    assert main(["train", "tiny-image", "--out", str(img), "--steps", "1", "--no-progress",
                 *SMALL]) == 0
    assert main(["train", "tiny-base", "--out", str(vid), "--steps", "1", "--no-progress",
                 "--init-from", str(img), *SMALL, "model.frames=2"]) == 0
    state = json.loads((vid / "checkpoints" / "latest" / "state.json").read_text())
    rec = state["init_from"]
    src_file = img / "checkpoints" / "step-0000001" / "ema.safetensors"
    assert rec["kind"] == "supernet" and rec["weights"] == "ema"
    assert rec["sha256"] == file_sha256(src_file) and rec["path"] == str(img.resolve())
    assert "blocks.0.temporal_attn" in rec["new_zero_output"]
    # resume does not read the source again (it may be gone)
    assert main(["extract", str(img), "--preset", "S", "--out", str(folder)]) == 0
    shutil.rmtree(img)
    assert main(["train", "tiny-base", "--out", str(vid), "--steps", "2", "--no-progress",
                 "--resume", "--init-from", str(img), *SMALL, "model.frames=2"]) == 0
    state = json.loads((vid / "checkpoints" / "latest" / "state.json").read_text())
    assert state["step"] == 2 and state["init_from"]["sha256"] == rec["sha256"]
    assert main(["extract", str(vid), "--preset", "B", "--out", str(tmp_path / "vid-B")]) == 0
    card = read_model_meta(tmp_path / "vid-B")["card"]
    assert card["init_from"]["sha256"] == rec["sha256"]
    assert rec["sha256"][:12] in (tmp_path / "vid-B" / "README.md").read_text()
    # an extracted image model folder starts a run too
    vid2 = tmp_path / "vid2"
    assert main(["train", "tiny-base", "--out", str(vid2), "--steps", "1", "--no-progress",
                 "--init-from", str(folder), *SMALL, "model.frames=2"]) == 0
    rec2 = json.loads((vid2 / "checkpoints" / "latest" / "state.json").read_text())["init_from"]
    assert rec2["kind"] == "extracted" and rec2["sha256"] == file_sha256(
        weights_file(folder)) and rec2["arch"]["config"] == "tiny-image"


def test_cli_mismatched_sources_exit_2_without_creating_the_run(tmp_path, capsys):
    ssr = sned.save_pretrained(sned.build_supernet("tiny-ssr"), tmp_path / "ssr")
    other = sned.save_pretrained(sned.build_supernet("tiny-image", ["model_channels=48"]),
                                 tmp_path / "wide")
    from sned.models.autoencoder import VideoAutoencoder, load_autoencoder_config
    from sned.models.codec import save_autoencoder

    ae = save_autoencoder(VideoAutoencoder(load_autoencoder_config("tiny-ae")), tmp_path / "ae")
    cases = [(tmp_path / "missing", "does not exist"), (ssr, "'ssr' model"),
             (other, "layer "), (tmp_path / "notamodel", "missing"), (ae, "autoencoder")]
    (tmp_path / "notamodel").mkdir()
    for i, (source, msg) in enumerate(cases):
        out = tmp_path / f"run{i}"
        rc = main(["train", "tiny-base", "--out", str(out), "--steps", "1", "--no-progress",
                   "--init-from", str(source), *SMALL])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and str(source) in err, err
        assert not out.exists()


def test_joint_image_video_training_runs_images_without_temporal_layers(tmp_path):
    from sned.train.config import load_run_config
    from sned.train.data import make_loader
    from sned.train.trainer import Trainer

    def step(fraction, out):
        run = load_run_config("tiny-base", SMALL + ["model.frames=3", "train.batch_size=4",
                                                    f"train.image_fraction={fraction}",
                                                    "train.warmup_steps=0", "train.steps=1"])
        tr = Trainer(run, out, progress=False)
        batch = next(iter(make_loader(tr.task.dataset(), run.data, 4, 0, 0)))
        result = tr.train_step(batch)
        temporal = [p.grad for n, p in tr.model.named_parameters() if ".temporal_attn." in n]
        return result, temporal

    only_images, grads = step(1.0, tmp_path / "a")
    assert all(g is None or not g.any() for g in grads)  # temporal layers were off
    assert only_images.extras == {"image_clips": 4}
    video, _ = step(0.0, tmp_path / "b")
    half, grads = step(0.5, tmp_path / "c")
    assert half.extras == {"image_clips": 2} and "image_clips" not in video.extras
    assert any(g is not None and g.any() for g in grads)
    assert only_images.train_macs < half.train_macs < video.train_macs


@pytest.mark.parametrize("video, image", [("tiny-base", "tiny-image"),
                                          ("pixel-base", "pixel-image")])
def test_built_in_image_configs_are_their_video_configs_counterparts(video, image):
    target = sned.build_supernet(video, device="meta")
    record = transfer_weights(target, sned.build_supernet(image, device="meta"))
    assert record.new and all(n.endswith((".temporal_attn", ".ff")) for n in record.new)
    assert record.copied_params + sum(
        p.numel() for n, p in target.named_parameters()
        if any(n.startswith(m + ".") for m in record.new)) == sum(
        p.numel() for p in target.parameters())
