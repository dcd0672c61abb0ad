"""Training: recovery of known audio-driven motion, region routing, checkpoints, resume, divergence."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gstalk.config import AudioMotionConfig, ModelConfig, TrainConfig
from gstalk.data import load_dataset
from gstalk.data.frames import Condition, FrameData
from gstalk.drive import Driver
from gstalk.errors import GstalkError
from gstalk.model.checkpoint import load_model, save_model
from gstalk.model.gaussians import ModelRegion
from gstalk.model.init import init_talking_head, model_regions
from gstalk.model.talking_head import Drive, render_portrait
from gstalk.regions import Region
from gstalk.train.checkpoint import latest_checkpoint
from gstalk.train.trainer import Trainer, read_log

from .synthetic import write_synthetic_dataset


def _synthetic_config(root: Path, out: Path, seed: int = 1, **overrides) -> TrainConfig:
    values = dict(
        dataset=root,
        out=out,
        size=64,
        max_gaussians=1500,
        iterations=(150, 300, 30),
        progress=False,
        log_every=10,
        seed=seed,
        audio_motion=AudioMotionConfig(steps=300, batch=8, sequence=16, augmented_copies=0, seed=seed),
    )
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "ds")


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory) -> Trainer:
    root, _ = synthetic
    tr = Trainer(_synthetic_config(root, tmp_path_factory.mktemp("runs") / "syn"))
    tr.run()
    return tr


def _mouth_psnr(run: Path, zero_audio: bool = False) -> tuple[float, float]:
    """Held-out PSNR of the full frame and of the mouth (lips and interior), rendered the way new speech
    is: the lower face predicted from the audio (or from silence), the rest from the frame itself."""
    driver = Driver(run)
    feats = np.asarray(driver.ds.audio_features, np.float32)
    if zero_audio:
        feats = np.ascontiguousarray(np.broadcast_to(driver.frames.silence, feats.shape), dtype=np.float32)
    speech = driver.speech(features=feats)
    full, mouth = [], []
    for i in driver.ds.test_ids.tolist():
        comp = driver.render_frame(speech, i, source=i)
        t = driver.frames.target(i)
        err = (comp.image - t.image) ** 2
        full.append(float(err.mean()))
        region = (t.labels == Region.MOUTH_INTERIOR) | (t.labels == Region.LIPS)
        mouth.append(float(err[region].mean()))
    return -10 * np.log10(np.mean(full)), -10 * np.log10(np.mean(mouth))


def test_training_recovers_audio_driven_lip_motion(trained: Trainer):
    with open(trained.out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    static = [float(r["loss"]) for r in rows if r["stage"] == "static"]
    assert static[-1] < 0.5 * static[0]
    full_psnr, full_mouth = _mouth_psnr(trained.out)
    _, zero_mouth = _mouth_psnr(trained.out, zero_audio=True)
    assert full_psnr > 28.0
    assert full_mouth > zero_mouth + 3.0  # the sound, not the pose or the canonical head, opens the mouth
    figures = json.loads((trained.out / "audio_motion.json").read_text())
    assert figures["gap_correlation"] > 0.9 and figures["lip_error_mm"] < 1.0
    assert (trained.out / "model" / "model.safetensors").is_file() and (trained.out / "loss.png").is_file()
    assert json.loads((trained.out / "config.json").read_text())["config"]["size"] == 64


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_lip_motion_is_recovered_for_every_seed(seed: int, tmp_path: Path):
    root, _ = write_synthetic_dataset(tmp_path / "ds", seed=seed)
    Trainer(_synthetic_config(root, tmp_path / "run", seed=seed)).run()
    _, full_mouth = _mouth_psnr(tmp_path / "run")
    _, zero_mouth = _mouth_psnr(tmp_path / "run", zero_audio=True)
    assert full_mouth > zero_mouth + 3.0, (seed, full_mouth, zero_mouth)


def test_residual_networks_move_only_their_regions(demo_dataset: Path):
    ds = load_dataset(demo_dataset)
    model = init_talking_head(ds, 600, config=ModelConfig(residual=True), seed=1)
    region = model.head.region
    assert {int(r) for r in region.unique()} == {ModelRegion.FACE, ModelRegion.EYES, ModelRegion.MOUTH}
    data = FrameData(ds, 64, past=model.config.context_past, future=model.config.context_future)
    drive = Drive(mesh=data.mesh(5), condition=data.condition(5))
    base = model(drive)
    assert torch.allclose(model(Drive(mesh=data.mesh(5))).head.means, base.head.means)  # residuals start at 0
    with torch.no_grad():
        model.lips.deform[-1].bias.fill_(0.01)
    moved = (model(drive).head.means - base.head.means).norm(dim=-1) > 1e-6
    assert moved.any() and (region[moved] == ModelRegion.MOUTH).all()
    assert torch.equal(model(drive).mouth.means, base.mouth.means)  # the interior has its own network
    with torch.no_grad():
        model.lips.deform[-1].bias.zero_()
        model.interior.deform[-1].bias.fill_(0.01)
        model.eyes.deform[-1].bias.fill_(0.01)
    moved = (model(drive).head.means - base.head.means).norm(dim=-1) > 1e-6
    assert moved.any() and (region[moved] == ModelRegion.EYES).all()
    assert (model(drive).mouth.means - base.mouth.means).norm(dim=-1).min() > 1e-6


def test_lip_gaussians_move_differently_for_a_steady_sound(demo_dataset: Path):
    """Each Gaussian's own spatial feature reaches the lips network's feed-forward path, so a steady sound
    can move the upper and the lower lip apart. With the attention made uniform (the query then cannot
    tell Gaussians apart), the Gaussians still move differently, and only because of that path."""
    ds = load_dataset(demo_dataset)
    model = init_talking_head(ds, 600, config=ModelConfig(residual=True), seed=1)
    torch.manual_seed(0)
    with torch.no_grad():
        torch.nn.init.normal_(model.lips.deform[-1].weight, std=0.01)
        model.lips.key.weight.zero_()
        model.lips.key.bias.zero_()
    cond = FrameData(ds, 64, past=model.config.context_past, future=model.config.context_future).condition(5)
    steady = Condition(cond.audio[4:5].expand_as(cond.audio).clone(), cond.expression)
    lips = (model.head.region == ModelRegion.MOUTH).nonzero().squeeze(1)
    h = model.spatial_features(model.head, "head").index_select(0, lips)
    tokens, f_a, _, _ = model.encode_condition(steady)
    spread = float(model.lips(h, tokens, f_a).detach().std(0).norm())
    with torch.no_grad():
        model.lips.own.weight.zero_()
    assert float(model.lips(h, tokens, f_a).detach().std(0).norm()) < 1e-9
    assert spread > 1e-5


def test_gaussians_start_in_the_regions_they_project_to(demo_dataset: Path):
    ds = load_dataset(demo_dataset)
    model = init_talking_head(ds, 2000, random_fraction=0.0, seed=2)
    i = int(ds.train_ids[len(ds.train_ids) // 2])
    with torch.no_grad():
        pts = model.head.posed(model.pose(FrameData(ds, ds.size).mesh(i)))[0].numpy().astype(np.float64)
    w2c = ds.world_to_cam[i]
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    fx, fy, cx, cy = ds.intrinsics
    u = np.clip((fx * cam[:, 0] / cam[:, 2] + cx).astype(int), 0, ds.size - 1)
    v = np.clip((fy * cam[:, 1] / cam[:, 2] + cy).astype(int), 0, ds.size - 1)
    expected = model_regions(ds.regions(i)[v, u])
    agree = (expected == model.head.region.numpy()).mean()
    assert agree > 0.85
    lips = model.head.region.numpy() == ModelRegion.MOUTH
    assert 0.005 < lips.mean() < 0.2  # the lips are a small part of the face


def test_checkpoint_round_trips_exactly(trained: Trainer, tmp_path: Path):
    path = save_model(tmp_path / "ckpt", trained.model, {"stage_index": 3, "step": 0})
    loaded, meta = load_model(path)
    a, b = trained.model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert meta["model"]["n_head"] == len(trained.model.head)
    i = int(trained.ds.test_ids[0])
    with torch.no_grad():
        drive = Drive(trained.data.mesh(i), trained.data.condition(i), trained.codes[i])
        x = render_portrait(trained.model(drive), trained.data.camera(i), trained.data.target(i).layer).image
        y = render_portrait(loaded(drive), trained.data.camera(i), trained.data.target(i).layer).image
    assert torch.equal(x, y)


def test_corrupt_or_foreign_checkpoints_are_refused(trained: Trainer, tmp_path: Path):
    path = save_model(tmp_path / "ckpt", trained.model, {"stage_index": 3, "step": 0})
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GstalkError, match=r"damaged \(their checksum"):
        load_model(path)
    meta = json.loads((path / "checkpoint.json").read_text())
    del meta["model_sha256"]  # without a checksum, safetensors itself finds the file cut short
    (path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(GstalkError, match="corrupt or unreadable"):
        load_model(path)
    meta["schema_version"] = 99
    (path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(GstalkError, match="schema 99"):
        load_model(path)
    with pytest.raises(GstalkError, match="no checkpoint"):
        load_model(tmp_path)


def _fusion_only(root: Path, out: Path) -> TrainConfig:
    return _synthetic_config(
        root, out, size=32, max_gaussians=400, iterations=(0, 0, 40), log_every=5, checkpoint_every=1000,
        audio_motion=AudioMotionConfig(steps=20, batch=4, sequence=16, augmented_copies=0),
    )  # fmt: skip


def test_resume_continues_exactly_where_it_stopped(synthetic, tmp_path: Path):
    root, _ = synthetic
    straight = Trainer(_fusion_only(root, tmp_path / "a"))
    straight.run()

    def stop_at_17(trainer: Trainer, stage, step: int) -> None:
        if step == 16:
            trainer.request_stop()  # what Ctrl-C does: finish this step, checkpoint, exit

    with pytest.raises(KeyboardInterrupt):
        Trainer(_fusion_only(root, tmp_path / "b"), on_step=stop_at_17).run()
    meta = json.loads((latest_checkpoint(tmp_path / "b") / "checkpoint.json").read_text())
    assert meta["step"] == 17 and not (tmp_path / "b" / "model").exists()
    resumed = Trainer(dataclasses.replace(_fusion_only(root, tmp_path / "b"), resume=True))
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [int(r["step"]) for r in read_log(tmp_path / "b" / "log.csv")]
    assert steps == sorted(steps) and steps[-1] == 39 and len(steps) == len(set(steps))


def test_divergence_stops_with_a_clear_message(synthetic, tmp_path: Path):
    root, _ = synthetic
    cfg = dataclasses.replace(_fusion_only(root, tmp_path / "nan"), iterations=(12, 0, 0), checkpoint_every=5)

    def poison_after_6(trainer: Trainer, stage, step: int) -> None:
        if step == 6:  # what a blown-up gradient leaves behind
            trainer.model.head.params["color_logits"].data[3] = float("nan")

    with pytest.raises(GstalkError, match=r"diverged at stage static, step 7 \(head.params.color_logits"):
        Trainer(cfg, on_step=poison_after_6).run()
    meta = json.loads((latest_checkpoint(tmp_path / "nan") / "checkpoint.json").read_text())
    assert meta["step"] == 5  # the last good checkpoint is kept
    load_model(latest_checkpoint(tmp_path / "nan"))


def test_existing_run_is_not_overwritten(synthetic, tmp_path: Path):
    root, _ = synthetic
    cfg = _fusion_only(root, tmp_path / "r")
    Trainer(cfg).run()
    with pytest.raises(GstalkError, match="already holds a training run"):
        Trainer(cfg).run()


@pytest.mark.parametrize("box", [(30, 60, 20, 50), (0, 20, 0, 80), (80, 96, 70, 80), (0, 96, 0, 80)])
def test_masked_losses_on_the_mask_box_equal_the_whole_image(box):
    from gstalk.train.losses import SSIM_RADIUS, dssim, mask_box, masked
    from gstalk.train.objective import window_share as _window_share

    g = torch.Generator().manual_seed(0)
    image, target = torch.rand(96, 80, 3, generator=g), torch.rand(96, 80, 3, generator=g)
    mask = torch.zeros(96, 80, dtype=torch.bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    pred = masked(image, target, mask)
    crop = mask_box(mask, 2 * SSIM_RADIUS)
    cropped = dssim(pred[crop], target[crop]) * _window_share(pred.shape, pred[crop].shape)
    assert float(cropped) == pytest.approx(float(dssim(pred, target)), rel=1e-5)
    whole = float((pred - target).abs().sum())
    assert float((pred - target).abs()[crop].sum()) == pytest.approx(whole, rel=1e-6)


def test_the_coefficient_error_is_the_weighted_mesh_error():
    """The audio → motion loss is computed on K coefficients; it equals the ω-weighted vertex error of the
    reconstructed meshes because the fitted components are ω-orthogonal."""
    from gstalk.face.mesh import N_MESH
    from gstalk.speech.motion import LowerFaceBasis

    rng = np.random.default_rng(0)
    displacement = rng.standard_normal((200, N_MESH, 3)) * 1e-3 * rng.random((1, N_MESH, 1))
    weights = np.clip(rng.random(N_MESH) * 1.5 - 0.3, 0, 1)
    basis, _ = LowerFaceBasis.fit(displacement, weights, 8)
    a, b = torch.randn(5, 7, 8), torch.randn(5, 7, 8)
    assert torch.allclose(basis.weighted_error(a, b), basis.mesh_error(a, b), rtol=1e-5, atol=0)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", [(3, 11, 11), (3, 64, 48), (3, 217, 236), (1, 40, 300)])
def test_compiled_ssim_matches_pytorch_msssim_in_value_and_gradient(shape, threads):
    """The compiled SSIM (train.ssim) is pytorch_msssim's: value to 1e-6 and gradient to 1e-5 of its
    largest, on images near and far from their target, in one part or in bands on several threads."""
    from pytorch_msssim import ssim

    from gstalk.splat import threads as pool
    from gstalk.train.ssim import ssim_cpu

    pool.configure(threads)
    try:
        g = torch.Generator().manual_seed(sum(shape))
        target = torch.rand(shape, generator=g)
        for noise in (0.02, 0.5):
            x = (target + noise * torch.randn(shape, generator=g)).clamp(0, 1).requires_grad_()
            want = ssim(x[None], target[None], data_range=1.0, size_average=True)
            (want_grad,) = torch.autograd.grad(want, x)
            got = ssim_cpu(x, target)
            (got_grad,) = torch.autograd.grad(2.5 * got, x)  # an upstream gradient other than 1
            assert float(got) == pytest.approx(float(want), abs=1e-6)
            want_grad = 2.5 * want_grad
            assert torch.allclose(got_grad, want_grad, atol=1e-5 * float(want_grad.abs().max()), rtol=0)
    finally:
        pool.configure()
    with pytest.raises(ValueError, match="at least 11"):
        ssim_cpu(torch.rand(3, 10, 40), torch.rand(3, 10, 40))


@pytest.mark.parametrize("stage_name", ["static", "fusion"])
def test_loss_terms_on_boxes_equal_the_full_frame_formulas(stage_name):
    """The masked stages compute L1, D-SSIM, the mouth loss, coverage and the detail terms on their masks'
    boxes: the values and the gradients are those of the full-frame formulas (the docstring's
    definitions)."""
    from types import SimpleNamespace

    from gstalk.config import TrainConfig, resolve_train, stages
    from gstalk.data.frames import Target
    from gstalk.model.talking_head import Composite
    from gstalk.regions import HEAD_REGIONS
    from gstalk.train.losses import dssim, masked, mouth_mask_loss, pyramid_l1
    from gstalk.train.objective import DETAIL_REGIONS, MOUTH_ROOM, loss_terms

    stage = {s.name: s for s in stages(resolve_train(TrainConfig(dataset=Path("."), out=Path("."))))}[
        stage_name
    ]
    stage = dataclasses.replace(stage, mouth_detail_weight=0.02)  # off in the presets; its formula too
    g = torch.Generator().manual_seed(1)
    h, w = 90, 70
    labels = torch.zeros(h, w, dtype=torch.int64)
    labels[20:60, 15:55] = Region.FACE
    labels[45:52, 25:45] = Region.LIPS
    labels[47:50, 28:42] = Region.MOUTH_INTERIOR
    head_mask = torch.zeros(h, w, dtype=torch.bool)
    head_mask[18:62, 13:57] = True
    mouth_mask = torch.zeros(h, w, dtype=torch.bool)
    mouth_mask[43:54, 23:47] = True
    target = Target(
        torch.rand(h, w, 3, generator=g), labels, torch.rand(h, w, 3, generator=g), head_mask, mouth_mask
    )
    image = torch.rand(h, w, 3, generator=g).requires_grad_()
    alphas = [torch.rand(1, h, w, 1, generator=g).requires_grad_() for _ in range(2)]
    comp = Composite(
        image, alphas[0][0, ..., 0], SimpleNamespace(alpha=alphas[0]), SimpleNamespace(alpha=alphas[1])
    )
    terms = loss_terms(stage, comp, None, target)
    weight = 1.0 + stage.mouth_region_weight * mouth_mask.float()[..., None]
    detail_weight = (
        1.0 + stage.detail_region_weight * torch.isin(labels, torch.tensor(DETAIL_REGIONS)).float()
    )
    mouth_only = torch.where(mouth_mask[..., None], image, target.image) - target.image
    mouth_detail = pyramid_l1(mouth_only) / mouth_mask.sum()
    if stage.masked:
        share = head_mask.float().mean()
        pred = masked(image, target.image, head_mask)
        interior = labels == Region.MOUTH_INTERIOR
        room = max(1, round(MOUTH_ROOM * h))  # the mouth mask, dilated
        near_mouth = torch.nn.functional.max_pool2d(mouth_mask.float()[None, None], 2 * room + 1, 1, room)
        near_mouth = near_mouth[0, 0] > 0
        mouth_outside = (alphas[1][0, ..., 0] * (~near_mouth).float()).sum() / (~near_mouth).sum()
        want = {
            "l1": (weight * (pred - target.image).abs()).mean() / share,
            "dssim": dssim(pred, target.image) / share,
            "stray": (alphas[0][0, ..., 0] * (~head_mask).float()).mean() / (1 - share) + mouth_outside,
            "mouth": mouth_mask_loss(comp.mouth_visible, interior, mouth_mask),
            "coverage": (1 - alphas[0][0, ..., 0])[torch.isin(labels, torch.tensor(HEAD_REGIONS))].mean(),
            "detail": pyramid_l1(pred - target.image, detail_weight) / (h * w) / share,
            "mouth_detail": mouth_detail,
        }
    else:
        want = {
            "l1": (weight * (image - target.image).abs()).mean(),
            "dssim": dssim(image, target.image),
            "detail": pyramid_l1(image - target.image, detail_weight) / (h * w),
            "mouth_detail": mouth_detail,
        }
    assert terms.keys() == want.keys()
    for name in want:
        assert float(terms[name]) == pytest.approx(float(want[name]), rel=1e-5), name
        got = torch.autograd.grad(terms[name], [image, *alphas], allow_unused=True, retain_graph=True)
        ref = torch.autograd.grad(want[name], [image, *alphas], allow_unused=True, retain_graph=True)
        for a, b in zip(got, ref):
            assert (a is None or not a.any()) == (b is None or not b.any()), name
            if a is not None and b is not None:
                assert torch.allclose(a, b, atol=1e-6 * float(b.abs().max()) + 1e-12, rtol=1e-4), name


def test_targets_read_ahead_equal_fresh_ones(demo_dataset: Path):
    """A training frame read ahead on the reading thread is the one read now, field by field; a
    read-ahead never asked for is dropped."""
    ds = load_dataset(demo_dataset)
    frames = FrameData(ds, 96, cache=False)
    fresh = FrameData(ds, 96, cache=False)
    frames.read_ahead(5)
    got, want = frames.target(5), fresh.target(5)
    for name in ("image", "labels", "layer", "head_mask", "mouth_mask"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    frames.read_ahead(6)
    frames.read_ahead(7)  # 6 was never used
    assert list(frames._ahead) == [7]
    assert torch.equal(frames.target(7).layer, fresh.target(7).layer) and not frames._ahead


def test_detail_loss_is_a_laplacian_pyramid_of_the_error():
    """The detail loss is the L1 of the error's Laplacian at full resolution and over 2 × 2 blocks (the
    conv2d formulation), zero for an error without detail (constant or linear ramps), and its gradient
    matches finite differences; on a mask's box it equals the whole image's."""
    from gstalk.train.losses import detail_loss
    from gstalk.train.objective import masked_detail

    g = torch.Generator().manual_seed(3)
    diff = torch.randn(37, 30, 3, generator=g, dtype=torch.float64)
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64).expand(3, 1, 3, 3)
    chw = diff.permute(2, 0, 1)[None]
    level0 = torch.nn.functional.conv2d(chw, kernel, groups=3).abs().sum()
    level1 = torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(chw, 2), kernel, groups=3).abs().sum()
    assert float(detail_loss(diff)) == pytest.approx(float((level0 + 4 * level1) / 3), rel=1e-12)
    ys, xs = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (37, 30)), indexing="ij")
    ramp = (0.3 + 0.01 * xs - 0.02 * ys)[..., None].expand(37, 30, 3)
    assert float(detail_loss(ramp)) == pytest.approx(0.0, abs=1e-10)
    weight = torch.rand(37, 30, generator=g, dtype=torch.float64)
    x = diff.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: detail_loss(t, weight), (x,), eps=1e-6, atol=1e-6)
    image, reference = torch.rand(60, 50, 3, generator=g), torch.rand(60, 50, 3, generator=g)
    mask = torch.zeros(60, 50, dtype=torch.bool)
    mask[21:40, 13:30] = True  # odd first row and column: the box is aligned to whole 2 × 2 blocks
    image.requires_grad_()
    pred = torch.where(mask[..., None], image, reference)
    weight = 1 + torch.rand(60, 50, generator=g)
    want = detail_loss(pred - reference, weight)
    got = masked_detail(image, reference, mask, weight)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    (a,) = torch.autograd.grad(got, image)
    (b,) = torch.autograd.grad(want, image)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("shape", [(60, 50, 3), (37, 30, 3), (5, 9, 1), (2, 40, 3)])
def test_compiled_detail_loss_matches_the_pytorch_one(shape):
    """train.laplacian (float32 CPU) is losses.pyramid_l1: value and gradient to 1e-5, weighted or not,
    on odd sizes and on images too small for a second level or for any."""
    from gstalk.train.laplacian import detail_loss_cpu
    from gstalk.train.losses import pyramid_l1

    g = torch.Generator().manual_seed(sum(shape))
    diff = torch.randn(*shape, generator=g)
    for weight in (None, 1 + torch.rand(*shape[:2], generator=g)):
        x = diff.clone().requires_grad_()
        got = detail_loss_cpu(x, weight)
        (got_grad,) = torch.autograd.grad(2.0 * got, x)
        y = diff.double().requires_grad_()
        want = pyramid_l1(y, None if weight is None else weight.double())
        (want_grad,) = torch.autograd.grad(2.0 * want, y)
        assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
        assert torch.allclose(got_grad.double(), want_grad, atol=1e-5)
