"""The compiled (numba) and the reference (torch) CPU backends agree, forward and backward, to 1e-5.

Random scenes of every kind of Gaussian, and degenerate ones: equal depths, centres on pixel centres and
tile boundaries, a Gaussian covering the whole image, needles, opacity-1 stacks that reach the
transmittance cut-off, Gaussians off screen and behind the camera, odd image sizes, camera batches and
1 to 5 channels.

Outputs are compared to 1e-5 absolute in both precisions. Gradients: in float64, end to end (through the
shared projection to means, rotations, scales, opacities and colours), to 1e-5 absolute; in float32, at
the backends' own interface (the compositing inputs: 2D means, conics, opacities, depths, colours), to
1e-5 relative to the largest. End to end in float32 the shared projection of needle-thin Gaussians is
ill-conditioned enough to amplify last-bit differences beyond that, whichever backend composites.
"""

from __future__ import annotations

import math

import pytest
import torch

from gstalk.splat import Camera, intrinsics_from_fov, look_at, rasterize
from gstalk.splat.numba_backend import rasterize_pixels_numba
from gstalk.splat.projection import Projected, covariance_3d, project_gaussians
from gstalk.splat.scenes import head_shell, orbit_cameras
from gstalk.splat.torch_backend import rasterize_pixels

TOL = 1e-5


def _camera(width: int, height: int, n_views: int = 1, dtype=torch.float32, fov: float = 40.0) -> Camera:
    mats = []
    for k in range(n_views):
        yaw = math.radians(-15 + 30 * k / max(n_views - 1, 1)) if n_views > 1 else 0.0
        eye = torch.tensor([2.0 * math.sin(yaw), 0.1, -2.0 * math.cos(yaw)])
        mats.append(look_at(eye, torch.zeros(3)))
    k = intrinsics_from_fov(fov, width, height)
    return Camera(torch.stack(mats).to(dtype), k.expand(n_views, 4).clone().to(dtype), width, height)


def _random_scene(n: int, channels: int, seed: int, dtype=torch.float32, spread=0.6):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * spread * 2
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.15), generator=g))
    opacities = torch.empty(n).uniform_(0.02, 1.0, generator=g)
    colors = torch.rand(n, channels, generator=g)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors)]


def _degenerate_scene(kind: str, dtype=torch.float32):
    """Scenes that stress the edge cases of binning, ordering and the cut-offs (camera: 2 m away)."""
    if kind == "equal_depths":  # ties broken by index on both backends
        n = 40
        g = torch.Generator().manual_seed(1)
        means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.3, torch.zeros(n, 1)], 1)
        quats = torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone()
        scales = torch.full((n, 3), 0.06)
        opacities = torch.full((n,), 0.6)
        colors = torch.rand(n, 3, generator=g)
    elif kind == "pixel_and_tile_aligned":  # centres exactly on pixel centres and on tile corners
        us = torch.tensor([15.5, 16.0, 31.5, 32.0, 16.0, 47.5])
        vs = torch.tensor([15.5, 16.0, 16.0, 32.0, 31.5, 8.0])
        f, cx, cy = intrinsics_from_fov(40.0, 64, 48)[[0, 2, 3]].tolist()
        means = torch.stack([(us - cx) * 2.0 / f, (vs - cy) * 2.0 / f, torch.zeros(6)], 1)
        quats = torch.tensor([[1.0, 0, 0, 0]]).expand(6, 4).clone()
        scales = torch.tensor([0.001, 0.01, 0.02, 0.004, 0.03, 0.0001]).repeat_interleave(3).reshape(6, 3)
        opacities = torch.tensor([1.0, 0.5, 0.9, 0.99, 0.3, 1.0])
        colors = torch.rand(6, 3, generator=torch.Generator().manual_seed(2))
    elif kind == "huge_and_small":  # one Gaussian over the whole image, small ones in front and behind
        means = torch.tensor([[0.0, 0.0, 0.3], [0.05, 0.02, -0.2], [-0.1, 0.05, 0.5], [0.0, 0.0, -0.1]])
        quats = torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4).clone()
        scales = torch.tensor([[3.0, 3.0, 3.0], [0.02, 0.05, 0.01], [0.1, 0.02, 0.1], [0.01, 0.01, 0.01]])
        opacities = torch.tensor([0.7, 0.9, 0.8, 0.4])
        colors = torch.rand(4, 3, generator=torch.Generator().manual_seed(3))
    elif kind == "needles":  # very thin, rotated: boxes much larger than the ellipses
        n = 30
        g = torch.Generator().manual_seed(4)
        means = (torch.rand(n, 3, generator=g) - 0.5) * 0.5
        quats = torch.randn(n, 4, generator=g)
        scales = torch.tensor([[1e-4, 0.25, 1e-4]]).expand(n, 3).clone()
        opacities = torch.empty(n).uniform_(0.3, 1.0, generator=g)
        colors = torch.rand(n, 3, generator=g)
    elif kind == "opaque_stack":  # opacity 1 clamps to 0.99; a stack reaches T < 1e-4 part-way
        n = 12
        means = torch.stack([torch.zeros(n), torch.zeros(n), torch.linspace(-0.3, 0.3, n)], 1)
        means[:, 0] += torch.linspace(-0.02, 0.02, n)
        quats = torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone()
        scales = torch.full((n, 3), 0.08)
        opacities = torch.ones(n)
        colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(5))
    elif kind == "off_screen_and_behind":  # boxes clipped at the borders; some culled
        means = torch.tensor(
            [[0.6, 0.0, 0.0], [-0.62, 0.3, 0.1], [0.0, 0.5, 0.0], [0.0, 0.0, -2.5], [0.0, 0.0, -1.995],
             [0.1, -0.1, 0.0]]
        )  # fmt: skip
        quats = torch.randn(6, 4, generator=torch.Generator().manual_seed(6))
        scales = torch.tensor([[0.1, 0.05, 0.1], [0.2, 0.2, 0.2], [0.05, 0.3, 0.05], [0.1, 0.1, 0.1],
                               [0.01, 0.01, 0.01], [0.04, 0.04, 0.04]])  # fmt: skip
        opacities = torch.tensor([0.8, 0.6, 0.9, 0.9, 0.5, 0.7])
        colors = torch.rand(6, 3, generator=torch.Generator().manual_seed(7))
    else:
        raise ValueError(kind)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors)]


def _run(backend: str, scene, cams: Camera, background):
    leaves = [t.clone().requires_grad_() for t in scene]
    out = rasterize(*leaves, cams, background=background, backend=backend)
    weights = torch.rand(
        *out.image.shape[:-1], out.image.shape[-1] + 2, generator=torch.Generator().manual_seed(11)
    ).to(out.image.dtype)
    (torch.cat([out.image, out.alpha, out.depth], -1) * weights).sum().backward()
    return out, [t.grad for t in leaves], out.means2d.grad


def _composite_grads(pixels, scene, cams: Camera):
    """Gradients at the compositing interface: 2D means, conics, opacities, depths, colours."""
    means, quats, scales, opacities, colors = scene
    with torch.no_grad():
        p = project_gaussians(
            means, covariance_3d(quats, scales), opacities, cams.world_to_cam, cams.intrinsics,
            cams.width, cams.height,
        )  # fmt: skip
    leaves = [t.clone().requires_grad_() for t in (p.means2d, p.conics, opacities, p.depths)]
    cols = colors.expand(len(cams), *colors.shape).clone().requires_grad_()
    proj = Projected(leaves[0], leaves[1], leaves[3], p.radii)
    color, alpha, depth = pixels(proj, leaves[2], cols, cams.width, cams.height)
    weights = torch.rand(*alpha.shape[:-1], color.shape[-1] + 2, generator=torch.Generator().manual_seed(12))
    (torch.cat([color, alpha, depth], -1) * weights.to(color.dtype)).sum().backward()
    return [t.grad for t in (*leaves, cols)]


def _compare(scene, cams: Camera, background=0.25):
    ref, ref_grads, ref_m2d = _run("torch", scene, cams, background)
    new, new_grads, new_m2d = _run("numba", scene, cams, background)
    assert new.backend == "numba"
    for name in ("image", "alpha", "depth"):
        a, b = getattr(ref, name).detach(), getattr(new, name).detach()
        assert (a - b).abs().max() <= TOL, name
    assert torch.equal(ref.radii, new.radii) and torch.equal(ref.visible, new.visible)
    if scene[0].dtype == torch.float64:
        names = ("means", "quats", "scales", "opacities", "colors", "means2d")
        for name, a, b in zip(names, [*ref_grads, ref_m2d], [*new_grads, new_m2d]):
            assert (a - b).abs().max() <= TOL, f"gradient of {name}"
    else:
        names = ("means2d", "conics", "opacities", "depths", "colors")
        pairs = zip(names, _composite_grads(rasterize_pixels, scene, cams), _composite_grads(
            rasterize_pixels_numba, scene, cams))  # fmt: skip
        for name, a, b in pairs:
            assert (a - b).abs().max() <= TOL * max(float(a.abs().max()), 1.0), f"gradient of {name}"


@pytest.mark.parametrize(
    ("n", "size", "channels", "views", "seed"),
    [(50, (37, 23), 1, 1, 0), (300, (64, 48), 3, 2, 1), (800, (96, 80), 5, 3, 2)],
)
def test_random_scenes_agree_in_float64(n, size, channels, views, seed):
    scene = _random_scene(n, channels, seed, torch.float64)
    cams = _camera(*size, views, torch.float64)
    background = torch.rand(views, size[1], size[0], channels, dtype=torch.float64)
    _compare(scene, cams, background)


@pytest.mark.parametrize(
    "kind",
    ["equal_depths", "pixel_and_tile_aligned", "huge_and_small", "needles", "opaque_stack",
     "off_screen_and_behind"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_degenerate_scenes_agree(kind, dtype):
    _compare(_degenerate_scene(kind, dtype), _camera(64, 48, 2, dtype))


def test_a_trained_head_sized_scene_agrees_in_float32():
    scene = head_shell(3000, seed=3)
    _compare(list(scene.tensors()), orbit_cameras(2, 128, max_yaw_degrees=35))
