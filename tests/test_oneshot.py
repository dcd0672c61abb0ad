"""One-shot avatars (issue 25, item 2): one photo → dataset → run → frames driven by speech.

The photo is the first frame of the generated demo clip (the astronaut, her face about 107 px from
forehead to chin at 512²); the photo errors use the same picture twice, shrunk, or no face at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from gstalk.config import PrepareConfig, TrainConfig
from gstalk.errors import GstalkError
from gstalk.prepare import prepare
from gstalk.prepare.photo import MIN_FACE_PX


def _frame(clip: Path) -> np.ndarray:
    from gstalk.media import read_frames

    return next(iter(read_frames(clip, 25.0, 0, 1)))[1]


@pytest.fixture(scope="module")
def photo(demo_clip: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(_frame(demo_clip)).save(path)
    return path


@pytest.fixture(scope="module")
def photo_dataset(photo: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photo-ds") / "astronaut"
    return prepare(PrepareConfig(image=photo, out=out, size=128, progress=False))


@pytest.fixture(scope="module")
def photo_run(photo_dataset: Path, tmp_path_factory) -> Path:
    from gstalk.train.trainer import train

    out = tmp_path_factory.mktemp("photo-run") / "run"
    return train(
        TrainConfig(dataset=photo_dataset, out=out, size=128, iterations=(60, 0, 10), progress=False)
    )


def _prepare_error(image: np.ndarray, tmp_path: Path) -> GstalkError:
    path = tmp_path / "photo.jpg"
    Image.fromarray(image).save(path)
    with pytest.raises(GstalkError) as err:
        prepare(PrepareConfig(image=path, out=tmp_path / "ds", size=128, progress=False))
    assert not (tmp_path / "ds").exists() and not (tmp_path / ".ds.partial").exists()
    return err.value


def test_a_photo_without_one_large_face_is_refused_with_the_fix(photo: Path, tmp_path: Path):
    rgb = np.asarray(Image.open(photo))
    err = _prepare_error(np.full((256, 256, 3), 90, np.uint8), tmp_path)
    assert "no face was found" in err.problem and "photo" in err.fix
    err = _prepare_error(np.concatenate([rgb, rgb[:, ::-1]], 1), tmp_path)
    assert "2 faces were found" in err.problem and "crop the photo" in err.fix
    canvas = np.full((512, 512, 3), 128, np.uint8)  # the face about 40 px: found, but too small
    canvas[100:300, 150:350] = cv2.resize(rgb, (200, 200), interpolation=cv2.INTER_AREA)
    err = _prepare_error(canvas, tmp_path)
    assert f"at least {MIN_FACE_PX} px" in err.problem and "closer or larger photo" in err.fix


def test_prepare_needs_exactly_one_input(photo: Path, demo_clip: Path, tmp_path: Path):
    for config in (PrepareConfig(out=tmp_path / "a"), PrepareConfig(out=tmp_path / "b", video=demo_clip,
                                                                     image=photo)):  # fmt: skip
        with pytest.raises(GstalkError, match="one input"):
            prepare(config)


def test_a_photo_becomes_a_dataset_of_one_frame(photo_dataset: Path, photo: Path):
    from gstalk.data.dataset import load_dataset

    ds = load_dataset(photo_dataset)
    assert ds.is_photo and ds.n_frames == 1 and list(ds.train_ids) == [0] and list(ds.test_ids) == [0]
    assert ds.image(0).shape == (128, 128, 3) and ds.valid.all()
    assert ds.tracks.mesh.shape[0] == 1 and ds.audio_features.shape[0] == 1
    saved = json.loads((photo_dataset / "config.json").read_text())["config"]
    assert saved["image"] == str(photo) and saved["video"] is None
    # the same command again: nothing to do (the config's hash is the manifest's)
    again = prepare(PrepareConfig(image=photo, out=photo_dataset, size=128, progress=False))
    assert again == photo_dataset


def test_a_photo_run_moves_by_the_prior_and_keeps_the_generic_mouth(photo_run: Path, photo_dataset: Path):
    from gstalk.data.dataset import load_dataset
    from gstalk.model.checkpoint import load_model
    from gstalk.model.init import init_talking_head
    from gstalk.speech.prior import load_prior

    config = json.loads((photo_run / "config.json").read_text())["config"]
    assert config["preset"] == "photo" and config["static"]["frozen_mouth"]
    assert json.loads((photo_run / "audio_motion.json").read_text())["source"].startswith("motion prior")
    model, _ = load_model(photo_run / "model", torch.device("cpu"))
    prior = load_prior("builtin")
    assert model.basis.components == prior.space.basis.shape[0]
    assert torch.equal(model.motion.retarget, torch.eye(model.basis.components))
    made = init_talking_head(load_dataset(photo_dataset), 14_000, config=model.config, prior=prior)
    for name in ("color_logits", "opacity_logits", "means"):  # never trained on a closed-mouth photo
        assert torch.equal(model.mouth.params[name], made.mouth.params[name])
    assert not torch.equal(model.head.params["color_logits"], made.head.params["color_logits"])


def _inner_lips_mask(mesh: np.ndarray, w2c: np.ndarray, intrinsics, size: int) -> np.ndarray:
    from gstalk.face.landmarks import LIPS_INNER

    p = mesh[LIPS_INNER] @ w2c[:3, :3].T + w2c[:3, 3]
    fx, fy, cx, cy = intrinsics
    uv = np.stack([fx * p[:, 0] / p[:, 2] + cx, fy * p[:, 1] / p[:, 2] + cy], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(uv * 8).astype(np.int32)], 1, shift=3)
    return mask.astype(bool)


def test_the_photo_avatar_opens_its_mouth_with_speech_and_closes_it_in_silence(photo_run: Path,
                                                                              demo_clip: Path):  # fmt: skip
    from gstalk.drive.driver import Driver, PoseSource
    from gstalk.media import AUDIO_RATE, read_audio

    driver = Driver(photo_run)
    speech_part = read_audio(demo_clip)[: 3 * AUDIO_RATE]
    audio = np.concatenate([speech_part, np.zeros(2 * AUDIO_RATE, np.float32)])
    speech = driver.speech(audio)
    n_speech = 3 * round(driver.fps)
    meshes = [driver.model.compose_mesh(c, driver.frames.mesh(0)).numpy() for c in speech.codes]
    gap = np.array([m[14, 1] - m[13, 1] for m in meshes])  # inner lips, head frame (y down), metres
    photo_gap = float(driver.ds.tracks.mesh[0, 14, 1] - driver.ds.tracks.mesh[0, 13, 1])
    assert photo_gap > 0.008  # the photo was taken mid-word: its lips 1 cm apart
    talking, silent = gap[:n_speech], gap[n_speech + 25 :]  # the last second is silence
    assert np.all(silent < 0.0025) and np.ptp(silent) < 0.001  # at rest in silence: the lips (nearly) meet
    assert talking.max() > silent.max() + 0.004 and np.ptp(talking) > 0.004  # speech opens them
    # rendered: where the mouth is open, nothing behind the head (background, the plate) shows through
    k_open, k_silent = int(np.argmax(talking)), len(gap) - 1
    cam = driver.camera(0, PoseSource("still"))  # the render's camera (its size and intrinsics)
    w2c, intrinsics = (
        cam.world_to_cam.numpy().reshape(4, 4).astype(np.float64),
        cam.intrinsics.numpy().ravel(),
    )
    open_mask = _inner_lips_mask(meshes[k_open].astype(np.float64), w2c, intrinsics, cam.width)
    silent_mask = _inner_lips_mask(meshes[k_silent].astype(np.float64), w2c, intrinsics, cam.width)
    assert open_mask.sum() > 1.5 * max(silent_mask.sum(), 1)
    comp = driver.render_frame(speech, k_open)
    # one pixel in from the lips' edge
    inner = cv2.erode(open_mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    alpha = comp.alpha.numpy()[inner]
    assert alpha.mean() > 0.97 and (alpha < 0.9).mean() < 0.02, (alpha.mean(), (alpha < 0.9).mean())
    shut = driver.render_frame(speech, k_silent).image.numpy()
    opened = comp.image.numpy()
    assert np.abs(opened - shut)[open_mask].mean() > 3 * np.abs(opened - shut)[~open_mask].mean()


def test_symmetry_fills_the_hidden_side_from_the_seen_one():
    from gstalk.model.symmetry import MIDLINE, PAIRS, reflect, symmetry_plane, visibility

    rng = np.random.default_rng(0)
    face = rng.normal(size=(478, 3)) * 0.03
    for a, b in PAIRS:  # the paired points mirror images across the plane x = 0.01, the midline on it
        face[b] = face[a] * [-1, 1, 1] + [0.02, 0, 0]
    face[list(MIDLINE), 0] = 0.01
    normal, offset = symmetry_plane(face)
    assert abs(abs(normal[0]) - 1) < 1e-9 and abs(offset * np.sign(normal[0]) - 0.01) < 1e-9
    assert np.allclose(reflect(face[[a for a, _ in PAIRS]], (normal, offset)), face[[b for _, b in PAIRS]])
    # a camera looking along +z at two points, one straight behind the other: the far one is hidden
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.05]])
    w2c = np.eye(4)
    w2c[2, 3] = 1.0
    seen = visibility(points, np.zeros((2, 3)), w2c, (500.0, 500.0, 64.0, 64.0))
    assert seen.tolist() == [1.0, 0.0]
    turned = visibility(points[:1], np.array([[1.0, 0.0, 0.0]]), w2c, (500.0, 500.0, 64.0, 64.0))
    assert turned[0] == 0.0  # a surface seen edge-on is not seen


def test_idle_pose_sways_gently_and_blinks(photo_run: Path):
    from gstalk.drive.driver import Driver, PoseSource, Speech
    from gstalk.drive.idle import LOWER_LIDS, UPPER_LIDS, blink_amount, idle_angles

    fps = 25.0
    angles = np.array([idle_angles(k, fps) for k in range(60 * 25)])
    assert np.abs(angles).max() < 3.5 and np.abs(angles[:, 0]).max() > 1.5  # a few degrees, no more
    assert np.abs(np.diff(angles, axis=0)).max() < 0.2  # smooth: under 0.2° from frame to frame
    amounts = np.array([blink_amount(k, fps) for k in range(60 * 25)])
    closed = np.flatnonzero(amounts > 0.9)
    assert 8 <= len(np.unique(closed // 25)) <= 25  # a blink every few seconds over a minute
    assert (amounts == 0).mean() > 0.85
    driver = Driver(photo_run)
    speech = driver.speech(np.zeros(16000 * 8, np.float32))
    idle, still = PoseSource("idle"), PoseSource("still")
    k = int(closed[0])
    shut = driver.drive(speech, k, 0, idle).mesh.numpy()
    opened = driver.drive(speech, k, 0, still).mesh.numpy()
    lid_gap = lambda m: np.linalg.norm(m[list(UPPER_LIDS)] - m[list(LOWER_LIDS)], axis=1).mean()  # noqa: E731
    assert lid_gap(shut) < 0.15 * lid_gap(opened)
    turned = driver.camera(0, idle, 30).world_to_cam.numpy()
    held = driver.camera(0, still, 30).world_to_cam.numpy()
    assert np.allclose(turned[:3, 3], held[:3, 3]) and not np.allclose(turned[:3, :3], held[:3, :3])
    a, b = (driver.render_frame(speech, k, p).image.numpy() for p in (idle, still))
    assert np.abs(a - b).mean() > 0.002
    # a stream renders blocks of the speech: the idle motion follows the whole render's clock
    block = Speech(speech.features[k - 5 :], speech.codes[k - 5 :])
    assert np.array_equal(driver.render_frame(block, 5, idle, frame=k).image.numpy(), a)
