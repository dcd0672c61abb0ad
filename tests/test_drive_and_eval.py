"""Render, streaming, evaluation, LPIPS and SyncNet loaders, and their error paths."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from gstalk.config import AudioMotionConfig, EvaluateConfig, RenderConfig, TrainConfig
from gstalk.demo import speech_like_audio
from gstalk.drive import Driver, PoseSource, pingpong, render_video, stream_frames
from gstalk.drive.stream import lookahead_seconds
from gstalk.errors import GstalkError
from gstalk.eval.evaluate import evaluate
from gstalk.eval.metrics import lip_sync
from gstalk.eval.syncnet import SyncNet, lse
from gstalk.media import probe_video, read_audio, read_frames
from gstalk.model.lpips import CHANNELS, LPIPS, alexnet_features
from gstalk.model.talking_head import render_portrait
from gstalk.train import train


@pytest.fixture(scope="module")
def run(demo_dataset: Path, tmp_path_factory) -> Path:
    """A briefly trained model of the generated subject (enough to drive; not a quality test)."""
    out = tmp_path_factory.mktemp("runs") / "astronaut"
    return train(
        TrainConfig(
            dataset=demo_dataset,
            out=out,
            size=64,
            max_gaussians=800,
            iterations=(40, 60, 10),
            progress=False,
            audio_motion=AudioMotionConfig(steps=150, augmented_copies=1),
        )
    )


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech_44k_stereo.wav"
    mono = speech_like_audio(3.0, seed=21).audio
    import librosa

    up = librosa.resample(mono, orig_sr=16_000, target_sr=44_100)
    soundfile.write(path, np.stack([up, 0.5 * up], 1), 44_100)  # another rate, two channels
    return path


def test_pingpong_plays_back_and_forth_without_jumps():
    ids = np.array([3, 4, 5, 6])
    seq = [pingpong(k, ids) for k in range(12)]
    assert seq == [3, 4, 5, 6, 5, 4, 3, 4, 5, 6, 5, 4]
    assert max(abs(a - b) for a, b in itertools.pairwise(seq)) == 1


def test_render_follows_the_audio_length_and_muxes_it(run: Path, speech: Path, tmp_path: Path):
    out = tmp_path / "talk.mp4"
    figures = render_video(RenderConfig(run=run, audio=speech, out=out, progress=False))
    info = probe_video(out)
    # 3 s of speech on a 4 s clip: the video lasts as long as the speech, and carries it
    assert figures["frames"] == 75 and abs(info.duration - 3.0) < 0.1
    assert info.has_audio and info.codec == "h264"
    back = read_audio(out)
    assert abs(len(back) / 16_000 - 3.0) < 0.1
    assert np.corrcoef(np.abs(back[:40_000]), np.abs(read_audio(speech)[:40_000]))[0, 1] > 0.5
    assert (tmp_path / "talk.config.json").is_file()
    assert not list(tmp_path.glob(".talk.mp4*"))


def test_long_audio_on_a_short_clip_and_still_pose(run: Path, tmp_path: Path):
    long = tmp_path / "long.wav"
    soundfile.write(long, speech_like_audio(9.0, seed=4).audio, 16_000)  # 9 s on a 4 s training clip
    out = tmp_path / "long.mp4"
    figures = render_video(
        RenderConfig(
            run=run,
            audio=long,
            out=out,
            pose="still",
            still_frame=10,
            yaw_deg=10.0,
            size=48,
            progress=False,
            yes=True,  # 10° is past what the generated clip turns: allowed, with a warning
        )
    )
    assert figures["frames"] == 225
    frames = [f for _, f in read_frames(out, 25)]
    assert frames[0].shape == (48, 48, 3)


def test_free_viewpoint_turns_the_head(run: Path):
    driver = Driver(run, size=64)
    feats = driver.speech(speech_like_audio(1.0).audio)
    straight = next(driver.render(feats, PoseSource("still", 5)))
    turned = next(driver.render(feats, PoseSource("still", 5, yaw_deg=20)))
    assert np.abs(straight.astype(int) - turned.astype(int)).mean() > 1.0


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_one_pass_render_matches_the_two_pass_composite(run: Path, backend: str):
    """Rendering draws face then interior in one pass; training composites two passes. They agree
    except where the early stop falls differently, which is rare and under 1%."""
    driver = Driver(run, size=64, backend=backend)
    speech = driver.speech(speech_like_audio(1.0).audio)
    with torch.no_grad():
        frame = driver.model(driver.drive(speech, 3, 3))
        camera, layer = driver.camera(3, PoseSource()), driver.layer(3)
        one = render_portrait(frame, camera, layer, backend=backend, fused=True)
        two = render_portrait(frame, camera, layer, backend=backend, fused=False)
    diff = (one.image - two.image).abs()
    assert diff.max() < 0.01 and (diff > 1e-5).float().mean() < 0.01
    assert torch.allclose(one.alpha, two.alpha, atol=0.01)


def test_render_bad_inputs(run: Path, tmp_path: Path, speech: Path):
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(32_000, np.float32), 16_000)
    with pytest.raises(GstalkError, match="silent"):
        render_video(RenderConfig(run=run, audio=silent, out=tmp_path / "a.mp4", progress=False))
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(GstalkError, match="not readable audio"):
        render_video(
            RenderConfig(run=run, audio=tmp_path / "junk.wav", out=tmp_path / "b.mp4", progress=False)
        )
    with pytest.raises(GstalkError, match="longer than the limit"):
        render_video(
            RenderConfig(run=run, audio=speech, out=tmp_path / "c.mp4", max_audio_seconds=1.0, progress=False)
        )
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(GstalkError, match="no checkpoint"):
        render_video(
            RenderConfig(run=tmp_path / "not_a_run", audio=speech, out=tmp_path / "d.mp4", progress=False)
        )
    with pytest.raises(GstalkError, match="beyond what the training clip shows"):  # far past the clip's turns
        render_video(RenderConfig(run=run, audio=speech, out=tmp_path / "e.mp4", yaw_deg=30, progress=False))
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*.mp4*"))


def test_incompatible_run_is_refused(run: Path, tmp_path: Path, speech: Path):
    import shutil

    copy = tmp_path / "old_run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model" / "checkpoint.json").read_text())
    meta["schema_version"] = 0
    meta["gstalk_version"] = "0.0.1"
    (copy / "model" / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(GstalkError, match=r"gstalk 0\.0\.1 with schema 0"):
        render_video(RenderConfig(run=copy, audio=speech, out=tmp_path / "x.mp4", progress=False))


def test_streaming_matches_offline_rendering_with_bounded_lookahead(run: Path):
    driver = Driver(run, size=64)
    audio = speech_like_audio(3.0, seed=8).audio
    offline = list(driver.render(driver.speech(audio)))
    chunk = 320  # 20 ms
    arrived, emitted = [], []

    def chunks():
        for start in range(0, len(audio), chunk):
            arrived.append((start + chunk) / 16_000)
            yield audio[start : start + chunk]

    for k, frame in stream_frames(driver, chunks()):
        emitted.append((k, arrived[-1], frame))
    assert [k for k, _, _ in emitted] == list(range(len(offline)))
    ahead = lookahead_seconds(driver)
    assert ahead == pytest.approx(3 / 25 + 0.08)
    # after the first second (loudness reference), every frame appears once its lookahead has arrived
    late = [t - k / 25 for k, t, _ in emitted if k / 25 > 1.2 and t < 2.9]
    assert max(late) <= ahead + 0.02 + 1e-9
    diffs = [np.abs(f.astype(int) - offline[k].astype(int)).mean() for k, _, f in emitted if 30 <= k < 70]
    assert np.mean(diffs) < 2.0  # same frames up to the streaming loudness estimate


def test_evaluate_writes_metrics_and_a_report(run: Path, speech: Path):
    metrics = evaluate(EvaluateConfig(run=run, cross_audio=(speech,), cross_seconds=2.0, progress=False))
    out = run / "eval"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for mode in ("full", "zero_audio", "static"):
        assert 10 < saved[mode]["psnr"] < 60 and 0 < saved[mode]["ssim"] <= 1
        assert saved[mode]["mouth_psnr"] is not None
    assert saved["full"]["lmd"] is not None and saved["full"]["lmd_frames"] > 0
    assert saved["full"]["lpips"] == "not computed: weights missing"
    assert saved["full"]["lse_c"] == saved["full"]["lse_d"] == "not computed: weights missing"
    assert set(saved["lip_sync"]) >= {"real", "rendered", "measure"}
    art = saved["articulation"]
    for key in ("opening_correlation", "opening_range_ratio", "lip_vertex_error_mm", "seam_share"):
        assert key in art and key in art["measures"]
    assert art["lip_vertex_error_mm"] > 0 and 0 <= art["seam_share"] < 0.5
    cross = saved["cross_audio"][0]
    assert cross["audio"] == speech.name and {"correlation", "opening_range_ratio", "seam_share"} <= set(
        cross
    )
    html = (out / "report.html").read_text()
    assert "data:video/mp4;base64," in html and html.count("data:image/png;base64,") >= 3
    assert (out / "mouth_sheet.png").is_file()
    assert probe_video(out / "side_by_side.mp4").width == 128
    # a re-run replaces the folder whole: it refuses, before any work, when the user put a file there
    from gstalk.eval.evaluate import EVALUATION_FILES

    assert {p.name for p in out.iterdir()} <= EVALUATION_FILES
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GstalkError, match=r"files gstalk evaluate did not write \(notes.txt\)"):
        evaluate(EvaluateConfig(run=run, progress=False))
    assert (out / "notes.txt").read_text() == "mine" and (out / "metrics.json").is_file()
    (out / "notes.txt").unlink()


def test_seam_share_counts_the_uncovered_plate():
    from gstalk.eval.evaluate import seam_share
    from gstalk.model.talking_head import Composite
    from gstalk.regions import Region

    labels = np.zeros((64, 64), np.uint8)
    labels[16:48, 16:48] = Region.FACE
    labels[48:60, 20:44] = Region.NECK

    def comp(alpha: np.ndarray) -> Composite:
        a = torch.from_numpy(alpha).float()
        return Composite(a[..., None].expand(64, 64, 3), a)

    covered = np.zeros((64, 64))
    covered[16:48, 16:48] = 1
    assert seam_share(comp(covered), labels) == 0
    hole = covered.copy()
    hole[40:48, 16:48] = 0  # the jaw moved up: the lowest rows of the face are not covered
    import cv2

    region = cv2.dilate((labels > 0).astype(np.uint8), np.ones((3, 3), np.uint8)).sum()
    assert seam_share(comp(hole), labels) == pytest.approx(8 * 32 / region)  # 8 rows of 32 uncovered


def test_lip_sync_measure_finds_the_offset():
    rng = np.random.default_rng(0)
    energy = np.convolve(rng.standard_normal(200), np.ones(5) / 5, mode="same")
    mouth = np.roll(energy, 2) + 0.05 * rng.standard_normal(200)  # the mouth follows 2 frames later
    m = lip_sync(energy, mouth)
    assert m.offset_frames == 2 and m.correlation > 0.9 and m.correlation > m.correlation_at_zero


def _tiny_lpips_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    feats = alexnet_features()
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, folder / "alexnet.pth")
    torch.save(
        {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(CHANNELS)},
        folder / "alex.pth",
    )
    return folder


def test_lpips_loads_real_format_weights_and_behaves(tmp_path: Path):
    model = LPIPS.from_folder(_tiny_lpips_folder(tmp_path))
    a = torch.rand(64, 64, 3)
    b = (a + 0.2 * torch.rand(64, 64, 3)).clamp(0, 1)
    assert float(model(a, a)) == pytest.approx(0.0, abs=1e-7)
    assert float(model(a, b)) > 0
    x = a.clone().requires_grad_()
    model(x, b).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    (tmp_path / "alex.pth").unlink()
    with pytest.raises(GstalkError, match="LPIPS weights missing"):
        LPIPS.from_folder(tmp_path)


def test_syncnet_loads_a_state_dict_and_scores_a_clip(tmp_path: Path):
    torch.manual_seed(0)
    net = SyncNet()
    torch.save(net.state_dict(), tmp_path / "syncnet_v2.model")
    loaded = SyncNet.from_file(tmp_path / "syncnet_v2.model")
    assert loaded.audio_embedding(torch.rand(2, 1, 13, 20)).shape == (2, 1024)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(36)]
    audio = speech_like_audio(36 / 25 + 0.3).audio
    scores = lse(loaded, frames, audio, 25.0, [(8, 8, 48)] * 36)
    assert np.isfinite(scores["lse_c"]) and scores["lse_d"] > 0 and scores["lse_c"] >= 0
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.model")
    with pytest.raises(GstalkError, match="does not hold SyncNet"):
        SyncNet.from_file(tmp_path / "other.model")


def test_bench_profiles_render_and_training_stage_by_stage(run: Path, tmp_path: Path):
    """`gstalk bench --what pipeline train` on a tiny input: every stage is reported, in both thread
    settings, and the figures add up."""
    from gstalk.bench import run_bench
    from gstalk.config import BenchConfig

    config = BenchConfig(what=("pipeline", "train"), run=run, sizes=(64,), render_seconds=1.0, train_steps=1,
                         out=tmp_path / "bench.json")  # fmt: skip
    result = run_bench(config)
    row = result["pipeline"]["results"]["render"][0]
    assert row["size"] == 64 and row["frames"] == 25 and row["end_to_end_fps"] > 0
    for label in ("one_thread", "all_cores"):
        stages = row[label]["stage_ms"]
        assert {"layer", "layer_work", "networks", "rasterize", "convert", "encode"} <= stages.keys()
        assert all(v["wall"] >= 0 and v["cpu"] >= 0 for v in stages.values())
    assert row["one_thread"]["threads"] == 1
    work = sum(v["cpu"] for k, v in row["one_thread"]["stage_ms"].items() if k != "layer")
    assert row["work_ms"] == pytest.approx(work, abs=0.01)
    train = result["train"]
    assert list(train["stages"]) == ["static", "motion", "fusion"]
    for stage in train["stages"].values():
        parts = stage["one_thread"]["part_ms"]
        assert {"target", "forward", "render", "loss", "backward", "optimizer"} <= parts.keys()
        assert stage["per_step_ms"] >= stage["all_cores"]["step_ms"] > 0
    assert "densify_ms" in train["stages"]["static"] and "densify_ms" not in train["stages"]["fusion"]
    assert train["estimated_minutes"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())["train"]["size"] == train["size"]


@pytest.mark.parametrize("variant", ["default", "no_expression_colour", "not_mesh_driven"])
def test_compiled_frame_matches_the_pytorch_modules(run: Path, variant: str):
    """A frozen model renders through one compiled pass (model.frozen); it computes what the PyTorch
    modules compute, Gaussian by Gaussian to 1e-5, and so the same image."""
    import dataclasses

    driver = Driver(run, size=64)
    model = driver.model
    if variant == "no_expression_colour":
        model.config = dataclasses.replace(model.config, expression_colour=False)
    if variant == "not_mesh_driven":
        model.config = dataclasses.replace(model.config, mesh_driven=False)
    model.freeze()
    assert model._cache["compiled"] is not None
    speech = driver.speech(speech_like_audio(1.0).audio)
    with torch.no_grad():
        for k, s in ((3, 3), (20, 30)):
            drive = driver.drive(speech, k, s)
            compiled = model(drive)
            cache, model._cache = model._cache, None
            reference = model(drive)
            model._cache = cache
            for got, want in zip(compiled.head.tensors() + compiled.mouth.tensors(),
                                 reference.head.tensors() + reference.mouth.tensors()):  # fmt: skip
                assert got.dtype == want.dtype and got.shape == want.shape
                assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
            camera, layer = driver.camera(s, PoseSource()), driver.layer(s)
            one = render_portrait(compiled, camera, layer).image
            two = render_portrait(reference, camera, layer).image
            assert (one - two).abs().max() < 1e-4
        assert model(None).joined is not None  # the canonical face too
    with torch.enable_grad():  # never with gradients: training sees the PyTorch modules
        assert model(driver.drive(speech, 3, 3)).joined is None


def _reference_real_layer(image: np.ndarray, labels: np.ndarray, plate: np.ndarray) -> np.ndarray:
    """The NumPy formulation data.layer compiles (as it stood before): the oracle of the test below."""
    import cv2

    from gstalk.data.layer import EDGE, HEAD_LUT, PIXEL_LUT, UNDER_CHIN
    from gstalk.regions import Region

    layer = np.where(PIXEL_LUT[labels][..., None], image, plate)
    edge = max(1, round(EDGE * labels.shape[0]))  # the head's border keeps the frame's pixels
    head = HEAD_LUT[labels]
    cols = np.arange(labels.shape[1])
    first = np.where(head.any(1), head.argmax(1), labels.shape[1])
    last = np.where(head.any(1), labels.shape[1] - 1 - head[:, ::-1].argmax(1), -1)
    outer = PIXEL_LUT[labels] & ((cols < first[:, None]) | (cols > last[:, None]))
    near = cv2.dilate(outer.astype(np.uint8), np.ones((2 * edge + 1,) * 2, np.uint8)) > 0
    layer[near & head] = image[near & head]
    neck_rows, neck_cols = np.nonzero(labels == Region.NECK)
    if not len(neck_rows):
        return layer
    band = max(1, round(UNDER_CHIN * labels.shape[0]))
    r0, r1 = max(0, neck_rows.min() - band), neck_rows.max() + 1
    c0, c1 = neck_cols.min(), neck_cols.max() + 1
    box = labels[r0:r1, c0:c1]
    neck, head = box == Region.NECK, HEAD_LUT[box]
    near = neck.copy()
    for _ in range(band):
        near[:-1] |= near[1:]
    fill = near & head
    if fill.any():
        top = neck_rows < neck_rows.min() + 2 * band
        colour = image[neck_rows[top], neck_cols[top]].mean(0)
        layer[r0:r1, c0:c1][fill] = np.round(colour).astype(np.uint8)
    return layer


def test_compiled_real_layer_equals_the_numpy_formulation(demo_dataset: Path):
    """The real-pixel layer, compiled, is the NumPy formulation's bit for bit: on the prepared frames
    (every size a render asks for) and on random label maps with necks of every shape, or none."""
    from gstalk.data.dataset import load_dataset
    from gstalk.data.frames import FrameData
    from gstalk.data.layer import real_layer

    ds = load_dataset(demo_dataset)
    for size in (64, 128, 200):
        frames = FrameData(ds, size)
        for i in (0, 17, ds.n_frames - 1):
            image, labels = frames.image(i), frames.labels(i)
            plate = frames._background_uint8
            want = _reference_real_layer(image, labels, plate)
            assert np.array_equal(real_layer(image, labels, plate), want)
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = rng.integers(8, 90, 2)
        image, plate = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
        labels = rng.integers(0, 9, (h, w), dtype=np.uint8)
        if trial % 4 == 0:
            labels[labels == 7] = 1  # no neck at all
        elif trial % 4 == 1:  # a neck block under a face block with lips, as in a portrait
            labels[:] = 0
            labels[: h // 2, w // 4 : 3 * w // 4] = 1
            labels[h // 3 : h // 3 + 2, w // 3 : w // 2] = 4
            labels[h // 2 :, w // 3 : 2 * w // 3] = 7
        want = _reference_real_layer(image, labels, plate)
        assert np.array_equal(real_layer(image, labels, plate), want), trial


def test_cached_and_prefetched_layers_equal_fresh_ones(run: Path):
    """A layer read now, read ahead on the reading thread, or made again from the 8-bit cache is the
    same tensor; read-aheads never asked for are dropped, oldest first, beyond a few."""
    from gstalk.drive import driver as driver_module

    driver = Driver(run, size=64)
    fresh = {s: driver.frames.layer(s) for s in (5, 6, 7)}
    assert torch.equal(driver.layer(5), fresh[5])  # read now
    driver.prefetch(6)
    assert torch.equal(driver.layer(6), fresh[6])  # read ahead
    assert torch.equal(driver.layer(5), fresh[5])  # from the 8-bit cache
    driver.prefetch(5)
    assert torch.equal(driver.layer(5), fresh[5])  # read ahead from the cache
    assert all(image.dtype == np.uint8 for image in driver._layers.values())
    for s in range(7, 8 + driver_module.READ_AHEAD):
        driver.prefetch(s)  # 7 is never asked for
    assert list(driver._prefetched) == list(range(8, 8 + driver_module.READ_AHEAD))
    assert torch.equal(driver.layer(9), driver.frames.layer(9))
    assert torch.equal(driver.layer(7), fresh[7])  # read now
    assert list(driver._layers)[-1] == 7 and len(driver._layers) <= driver_module.LAYER_CACHE


def test_compiled_frame_kernel_splits_into_parts_exactly():
    """The compiled frame runs in parts of whole blocks on gstalk's threads: any split gives the
    result of one pass."""
    from gstalk.model import frozen

    rng = np.random.default_rng(0)
    n, hidden, frames = 3 * frozen.BLOCK + 17, 64, 12

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    rot = np.linalg.qr(rng.standard_normal((frames, 3, 3)))[0].astype(np.float32)
    inputs = (rng.integers(0, frames, n), f32(n, 3), f32(n, 4), f32(n, 3), f32(n, 3),
              frozen.blocked(f32(n, hidden)), f32(hidden), f32(3, hidden), f32(3),
              rot, f32(frames, 3), np.abs(f32(frames)) + 0.5, f32(frames, 4))  # fmt: skip

    def run(parts):
        outs = [np.full((n, k), np.nan, np.float32) for k in (3, 4, 3, 3)]
        for lo, hi in parts:
            frozen.place_and_shade(lo, hi, *inputs, *outs)
        return outs

    whole = run([(0, n)])
    assert all(np.isfinite(o).all() for o in whole)
    block = frozen.BLOCK
    for split in ([(0, block), (block, n)], [(0, 2 * block), (2 * block, 3 * block), (3 * block, n)]):
        assert all(np.array_equal(a, b) for a, b in zip(run(split), whole))
