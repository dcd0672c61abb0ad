"""Face geometry and motion: the mesh topology, Gaussians bound to it, the lower face's motion basis, the
fit of a mesh to 2D landmarks, the focal length on a synthetic render, and damaged meshes in datasets."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gstalk.data import load_dataset
from gstalk.errors import GstalkError
from gstalk.face.mesh import JAW, N_MESH, face_triangles, fit_to_landmarks, lower_face_weights, mouth_gap
from gstalk.face.pose import estimate_focal
from gstalk.model.binding import Binding, face_pose, frame_index, localise, place, rotmat_to_quat
from gstalk.speech.motion import LIPS, LowerFaceBasis
from gstalk.splat import quat_to_rotmat

from .synthetic import animated, face_mesh


@pytest.fixture(scope="module")
def mesh() -> np.ndarray:
    return face_mesh()


def test_the_triangulation_is_a_disk_with_three_holes(mesh: np.ndarray):
    tris = face_triangles(mesh)
    assert tris.shape == (852, 3) and tris.min() == 0 and tris.max() == N_MESH - 1
    # Euler: V - E + F = 1 - holes (the eyes and the mouth); every edge in at most two faces
    edges = {tuple(sorted(e)) for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2]))}
    assert N_MESH - len(edges) + len(tris) == -2
    v = mesh[:N_MESH]
    normal = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    assert (normal[:, 2] < 0).mean() > 0.95  # outward: toward a camera in front of the face (−z)
    w = lower_face_weights(mesh)
    assert w[10] == 0 and w[LIPS].min() == 1 and w[152] == 1  # forehead, lips, chin


def _bound(mesh: np.ndarray, n: int = 200, seed: int = 0):
    """Points near the mesh bound to their triangle, plus a skull-bound and a jaw-bound point."""
    rng = np.random.default_rng(seed)
    tris = face_triangles(mesh)
    pick = rng.integers(0, len(tris), n)
    centroid = mesh[tris[pick]].mean(1)
    points = np.concatenate([centroid + rng.normal(0, 0.002, centroid.shape), mesh[[10, 152]] + 0.01])
    binding = torch.tensor([*[Binding.TRIANGLE] * n, Binding.SKULL, Binding.JAW], dtype=torch.uint8)
    parent = torch.tensor([*pick, 0, 0], dtype=torch.int32)
    return torch.from_numpy(points), frame_index(binding, parent), torch.from_numpy(tris)


def _pose(mesh: np.ndarray, canonical: np.ndarray, tris: torch.Tensor):
    can = torch.from_numpy(canonical[:N_MESH])
    sizes = face_pose(can, can, tris, torch.ones(len(tris), dtype=can.dtype)).scale[2:]
    return face_pose(torch.from_numpy(mesh[:N_MESH]), can, tris, sizes)


def test_bound_gaussians_round_trip_and_follow_the_mesh(mesh: np.ndarray):
    points, index, tris = _bound(mesh)
    rest = _pose(mesh, mesh, tris)
    local = localise(points, index, rest)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=points.dtype).expand(len(points), 4)
    zeros = torch.zeros(len(points), 3, dtype=points.dtype)
    back, q_rest, s = place(local, quats, zeros, index, rest)
    assert torch.allclose(back, points, atol=1e-12) and torch.allclose(s, zeros, atol=1e-12)
    # a rigid motion of the whole mesh moves triangle- and jaw-bound Gaussians rigidly; the skull stays
    rot = Rotation.from_euler("xyz", [8, -12, 5], degrees=True).as_matrix()
    moved = mesh @ rot.T + np.array([0.01, -0.02, 0.03])
    posed, q, s = place(local, quats, zeros, index, _pose(moved, mesh, tris))
    expected = points.numpy() @ rot.T + np.array([0.01, -0.02, 0.03])
    assert np.allclose(posed[:-2].numpy(), expected[:-2], atol=1e-9)  # triangles
    assert np.allclose(posed[-1].numpy(), expected[-1], atol=1e-9)  # jaw
    assert torch.allclose(posed[-2], points[-2])  # skull
    # and turns their rotations with it (triangles and jaw; the skull-bound one keeps its own)
    moving = torch.tensor([*range(len(points) - 2), len(points) - 1])
    turned = rot @ quat_to_rotmat(q_rest[moving]).numpy()
    assert np.allclose(quat_to_rotmat(q[moving]).numpy(), turned, atol=1e-9)
    assert torch.allclose(q[-2], q_rest[-2])
    # a uniformly scaled mesh scales the triangle-bound Gaussians with it
    _, _, s = place(local, quats, zeros, index, _pose(mesh * 1.5, mesh, tris))
    assert torch.allclose(s[:-2], torch.full_like(s[:-2], math.log(1.5)), atol=1e-9)


def test_the_jaw_follows_an_opening_mouth(mesh: np.ndarray):
    points, index, tris = _bound(mesh)
    local = localise(points, index, _pose(mesh, mesh, tris))
    # open the jaw 12° about a hinge near the ears: the jaw vertices turn rigidly, the rest stays
    hinge = mesh[[234, 454]].mean(0) + np.array([0.0, 0.0, 0.03])
    turn = Rotation.from_euler("x", 12, degrees=True).as_matrix()  # y down, z into the head: opens
    opened = mesh.copy()
    opened[JAW] = (mesh[JAW] - hinge) @ turn.T + hinge
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=points.dtype).expand(len(points), 4)
    posed, _, _ = place(local, quats, torch.zeros(len(points), 3, dtype=points.dtype), index,
                        _pose(opened, mesh, tris))  # fmt: skip
    expected = (points[-1].numpy() - hinge) @ turn.T + hinge
    assert np.allclose(posed[-1].numpy(), expected, atol=1e-9)  # the jaw-bound point under the chin
    assert torch.equal(posed[-2], points[-2])  # the skull-bound point on the forehead
    assert expected[1] - points[-1, 1].item() > 0.005  # it went down, with the chin
    assert 1000 * mouth_gap(opened) > 1000 * mouth_gap(mesh) + 5


def test_quaternions_round_trip():
    rots = Rotation.random(50, random_state=1).as_matrix()
    q = rotmat_to_quat(torch.from_numpy(rots))
    assert torch.allclose(quat_to_rotmat(q), torch.from_numpy(rots), atol=1e-12)
    assert (q[:, 0] >= 0).all()


def test_motion_basis_coefficients_measure_the_weighted_vertex_error(mesh: np.ndarray):
    rng = np.random.default_rng(3)
    opening = rng.random(200)
    wobble = rng.normal(0, 0.0005, (200, N_MESH, 3)) * lower_face_weights(mesh)[None, :, None]
    displacement = np.stack([animated(mesh, o)[:N_MESH] - mesh[:N_MESH] for o in opening]) + wobble
    basis, coeffs = LowerFaceBasis.fit(displacement, lower_face_weights(mesh), components=8)
    c = torch.from_numpy(coeffs)
    assert torch.allclose(basis.project(torch.from_numpy(displacement).float()), c, atol=1e-3)
    assert abs(float(c[:, 0].std()) - 1) < 0.01  # standardised
    # the first component is the jaw opening: alone, it explains the lips' motion
    first = torch.zeros_like(c)
    first[:, 0] = c[:, 0]
    lips = basis.reconstruct(first)[:, LIPS]
    assert np.corrcoef(lips[:, :, 1].mean(1).numpy(), opening)[0, 1] ** 2 > 0.9
    d = torch.from_numpy(displacement).float()
    error = (basis.reconstruct(c) - d)[:, basis.weights > 0]
    assert float(error.abs().max()) < 0.003  # what 8 components miss is the wobble's remainder
    a, b = c[:5], c[5:10]
    w = basis.vertex_weights
    direct = ((basis.reconstruct(a) - basis.reconstruct(b)).pow(2).sum(-1) * w).sum(-1) / w.sum()
    assert torch.allclose(basis.weighted_error(a, b), direct, rtol=1e-5)


def test_a_mesh_is_fitted_exactly_onto_its_landmarks(mesh: np.ndarray):
    rng = np.random.default_rng(4)
    w2c = np.tile(np.eye(4), (3, 1, 1))
    w2c[:, :3, :3] = Rotation.from_euler("y", [[-10], [0], [12]], degrees=True).as_matrix()
    w2c[:, 2, 3] = 0.6
    intr = np.array([700.0, 700.0, 256.0, 256.0])
    meshes = np.stack([mesh[:N_MESH]] * 3) + rng.normal(0, 0.001, (3, N_MESH, 3))
    cam = np.einsum("tij,tnj->tni", w2c[:, :3, :3], meshes) + w2c[:, None, :3, 3]
    landmarks = np.stack([700 * cam[..., 0] / cam[..., 2] + 256, 700 * cam[..., 1] / cam[..., 2] + 256], -1)
    landmarks += rng.normal(0, 1.0, landmarks.shape)  # what a tracker would see
    fitted = fit_to_landmarks(meshes, w2c, intr, landmarks)
    cam = np.einsum("tij,tnj->tni", w2c[:, :3, :3], fitted.astype(np.float64)) + w2c[:, None, :3, 3]
    projected = np.stack([700 * cam[..., 0] / cam[..., 2] + 256, 700 * cam[..., 1] / cam[..., 2] + 256], -1)
    assert np.abs(projected - landmarks).max() < 1e-3
    assert np.allclose(
        cam[..., 2], (np.einsum("tij,tnj->tni", w2c[:, :3, :3], meshes) + 0.6)[..., 2], atol=1e-6
    )


@pytest.mark.parametrize("fov", [25.0, 45.0])
def test_focal_length_is_recovered_from_a_turning_head(mesh: np.ndarray, fov: float):
    """Landmarks of a head turning ±15° seen through a known lens, with a tracker's noise and a canonical
    shape whose depth is 20 % off: the joint fit finds the focal length within 10 %."""
    rng = np.random.default_rng(5)
    size, n = 512, 150
    f = 0.5 * size / np.tan(np.radians(fov) / 2)
    distance = f * 0.15 / (0.35 * size)  # the face spans about a third of the crop
    t = np.arange(n)
    angles = np.stack([15 * np.sin(2 * np.pi * t / 90), 7 * np.sin(2 * np.pi * t / 61 + 1),
                       3 * np.sin(2 * np.pi * t / 37)], 1)  # fmt: skip
    rot = Rotation.from_euler("yxz", angles, degrees=True).as_matrix()
    cam = np.einsum("tij,pj->tpi", rot, mesh) + np.array([0.01, 0.02, distance])
    uv = np.stack([f * cam[..., 0] / cam[..., 2] + 256, f * cam[..., 1] / cam[..., 2] + 256], -1)
    uv += rng.normal(0, 0.7, uv.shape)
    guess = mesh.copy()
    guess[:, 2] = (guess[:, 2] - guess[:, 2].mean()) * 1.2 + guess[:, 2].mean()
    estimate, fit = estimate_focal(guess, np.concatenate([uv, np.zeros((n, 478, 1))], -1), np.ones(n, bool),
                                   256, 256, size)  # fmt: skip
    assert abs(estimate / f - 1) < 0.10, (fov, fit["fov_deg"])
    assert fit["constrained_by_clip"]


def test_a_still_head_falls_back_to_the_prior(mesh: np.ndarray):
    size, n = 512, 60
    f = 0.5 * size / np.tan(np.radians(30) / 2)
    cam = mesh[None] + np.array([0.0, 0.0, 0.6])
    uv = np.stack([f * cam[..., 0] / cam[..., 2] + 256, f * cam[..., 1] / cam[..., 2] + 256], -1)
    uv = np.repeat(uv, n, 0) + np.random.default_rng(6).normal(0, 0.7, (n, 478, 2))
    _, fit = estimate_focal(mesh, np.concatenate([uv, np.zeros((n, 478, 1))], -1), np.ones(n, bool),
                            256, 256, size)  # fmt: skip
    assert fit["sigma_log_focal"] > 0.2  # the clip barely constrains it, and the record says so


@pytest.mark.parametrize("damage", ["missing", "nan", "triangles"])
def test_damaged_meshes_in_a_dataset_are_named(demo_dataset: Path, tmp_path: Path, damage: str):
    copy = tmp_path / "ds"
    shutil.copytree(demo_dataset, copy)
    with np.load(copy / "tracks.npz") as data:
        arrays = {k: data[k] for k in data.files}
    if damage == "missing":
        del arrays["mesh"]
        match = "lacks mesh"
    elif damage == "nan":
        arrays["mesh"][3, 13, 1] = np.nan
        match = "mesh holds NaN"
    else:
        arrays["triangles"][0, 0] = 9999
        match = "triangles index vertices outside"
    np.savez(copy / "tracks.npz", **arrays)
    with pytest.raises(GstalkError, match=match) as err:
        load_dataset(copy)
    assert "prepare" in err.value.fix


def test_the_dataset_records_how_the_lens_was_found(demo_dataset: Path):
    summary = json.loads((demo_dataset / "summary.json").read_text())
    assert summary["focal_fit"]["method"].startswith("bundle adjustment")
    assert 5 < summary["focal_fit"]["fov_deg"] < 90
    ds = load_dataset(demo_dataset)
    assert ds.tracks.mesh.shape == (ds.n_frames, 478, 3) and ds.tracks.triangles.shape == (852, 3)
    assert set(JAW) < set(range(N_MESH))
