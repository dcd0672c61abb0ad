"""ER-NeRF / TalkingGaussian interop: export, import, and the round trip between them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gstalk.data import load_dataset
from gstalk.data.ernerf import MP_TO_68, export_ernerf, from_ernerf_matrix, to_ernerf_matrix
from gstalk.errors import GstalkError
from gstalk.prepare import import_ernerf


def test_matrix_conversion_is_an_involution_and_flips_axes():
    from scipy.spatial.transform import Rotation

    w2c = np.eye(4)
    w2c[:3, :3] = Rotation.from_euler("xyz", [5, -10, 3], degrees=True).as_matrix()
    w2c[:3, 3] = [0.01, -0.02, 0.5]
    m = to_ernerf_matrix(w2c)
    assert np.allclose(from_ernerf_matrix(m), w2c)
    # the camera sits in front of the face: +z in their head frame (toward the viewer), y up
    cam_centre_theirs = m[:3, 3]
    assert cam_centre_theirs[2] > 0.4
    # a point above the head (world -y in ours) is +y in theirs
    assert (np.diag([1, -1, -1]) @ np.array([0, -1.0, 0]))[1] > 0


def test_export_writes_their_layout(tmp_path: Path, demo_dataset: Path):
    out = export_ernerf(demo_dataset, tmp_path / "ernerf")
    ds = load_dataset(demo_dataset)
    train = json.loads((out / "transforms_train.json").read_text())
    val = json.loads((out / "transforms_val.json").read_text())
    assert {"focal_len", "cx", "cy", "frames"} <= train.keys()
    assert [f["img_id"] for f in train["frames"]] == ds.train_ids.tolist()
    assert [f["img_id"] for f in val["frames"]] == ds.test_ids.tolist()
    assert np.array(train["frames"][0]["transform_matrix"]).shape == (4, 4)
    for sub, ext in (("ori_imgs", "jpg"), ("parsing", "png"), ("gt_imgs", "jpg"), ("torso_imgs", "png")):
        assert len(list((out / sub).glob(f"*.{ext}"))) == ds.n_frames, sub
    assert len(list((out / "ori_imgs").glob("*.lms"))) == ds.n_frames
    assert np.loadtxt(out / "ori_imgs" / "0.lms").shape == (68, 2)
    assert (out / "bc.jpg").is_file() and (out / "aud.wav").is_file()
    spec = ds.audio_spec
    assert np.load(out / f"aud_{spec.features}.npy").shape == (ds.n_frames, spec.window, spec.dim)
    header = (out / "au.csv").read_text().splitlines()[0].split(",")
    assert " AU45_r" in header  # OpenFace's spelling, leading space included, as their loaders read it
    parsing = cv2.imread(str(out / "parsing" / "0.png"))
    colours = {tuple(c) for c in parsing.reshape(-1, 3)}
    assert colours <= {(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)}
    assert (255, 0, 0) in colours
    torso = cv2.imread(str(out / "torso_imgs" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert torso.shape[-1] == 4 and set(np.unique(torso[..., 3])) <= {0, 255}
    assert len(MP_TO_68) == 68


def test_round_trip_keeps_frames_and_cameras(tmp_path: Path, demo_dataset: Path):
    exported = export_ernerf(demo_dataset, tmp_path / "ernerf")
    back = load_dataset(import_ernerf(exported, tmp_path / "back", progress=False))
    ds = load_dataset(demo_dataset)
    assert back.n_frames == ds.n_frames and back.size == ds.size
    assert np.allclose(back.world_to_cam, ds.world_to_cam, atol=1e-5)
    assert np.allclose(back.intrinsics, ds.intrinsics, atol=1e-3)
    a, b = ds.image(10).astype(float), back.image(10).astype(float)
    assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 35
    assert back.test_ids.tolist() == ds.test_ids.tolist()


def test_import_refuses_other_folders(tmp_path: Path):
    with pytest.raises(GstalkError, match=r"transforms_train.json is missing"):
        import_ernerf(tmp_path, tmp_path / "out")
