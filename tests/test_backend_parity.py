"""The compiled (numba) and the reference (torch) CPU backends agree, forward and backward, to 1e-5.

Random scenes of every kind of Gaussian, and degenerate ones: equal depths, centres on pixel centres and
tile boundaries, a Gaussian covering the whole image, needles, opacity-1 stacks that reach the
transmittance cut-off, Gaussians off screen and behind the camera, odd image sizes, camera batches and
1 to 5 channels.

In float64, end to end: images to 1e-5 absolute, and the gradients of means, rotations, scales,
opacities, colours and 2D means to 1e-5 absolute, those of the cameras (world_to_cam, intrinsics) to 1e-5
relative to the largest; the compiled backend's projection and its hand-written backward are checked
against autograd of the shared PyTorch projection there.

In float32 the compiled backend projects in float64 while the torch backend projects in float32, whose
rounding the projection of needle-thin or huge Gaussians amplifies to 1e-4 and beyond. So in float32 the
backends are compared on the same projected inputs (the compositing interface): images to 1e-5 absolute,
gradients of 2D means, conics, opacities, depths and colours to 1e-5 relative to the largest (or, where
float32 sums over a Gaussian spanning the image lose more than that in either backend, the compiled result
no further from the exact one than the reference's); and end to end each is compared with the float64
reference, where the compiled one must be within 1e-5 of it or no further from it than the torch
backend's own float32 result.

Rendering without gradients (the compiled projection, one pass to the final image) must give the same
images as the differentiable path, and its final-image arithmetic (background, depth division) must match
the reference's on the same projection.
"""

from __future__ import annotations

import math
import time
from threading import Event

import numpy as np
import pytest
import torch
from numba import njit

from gstalk.splat import Camera, intrinsics_from_fov, look_at, rasterize, threads, torch_backend
from gstalk.splat import numba_kernels as nk
from gstalk.splat.numba_backend import rasterize_image_numba, rasterize_pixels_numba
from gstalk.splat.projection import Projected, covariance_3d, project_gaussians
from gstalk.splat.rasterize import _background
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
    elif kind == "opacity_extremes":  # at and around the 1/255 floor, and at the 0.99 clamp and beyond
        ops = [0.0039, 0.00392, 1 / 255, 0.00395, 0.0045, 0.02, 0.5, 0.985, 0.99, 0.991, 0.999, 1.0]
        n = len(ops)
        g = torch.Generator().manual_seed(8)
        means = torch.cat(
            [(torch.rand(n, 2, generator=g) - 0.5) * 0.4, torch.linspace(-0.2, 0.2, n)[:, None]], 1
        )
        quats = torch.randn(n, 4, generator=g)
        scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.03), math.log(0.12), generator=g))
        opacities = torch.tensor(ops)
        colors = torch.rand(n, 3, generator=g)
    elif kind == "tile_crossing":  # centres on 16-pixel tile borders, boxes spanning 1 to 20 tiles
        f, cx, cy = intrinsics_from_fov(40.0, 64, 48)[[0, 2, 3]].tolist()
        us = torch.tensor([16.0, 32.0, 48.0, 16.0, 32.0, 0.0, 64.0, 31.9, 32.1, 24.0])
        vs = torch.tensor([16.0, 16.0, 32.0, 32.0, 0.0, 24.0, 48.0, 16.1, 15.9, 24.0])
        means = torch.stack([(us - cx) * 2.0 / f, (vs - cy) * 2.0 / f, torch.linspace(-0.1, 0.1, 10)], 1)
        quats = torch.randn(10, 4, generator=torch.Generator().manual_seed(9))
        sizes = torch.tensor([0.003, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.005, 0.005, 0.3])
        scales = sizes[:, None] * torch.tensor([[1.0, 0.4, 0.7]])
        opacities = torch.tensor([0.9, 0.5, 0.7, 0.3, 0.95, 0.6, 0.8, 1.0, 1.0, 0.2])
        colors = torch.rand(10, 3, generator=torch.Generator().manual_seed(10))
    elif kind == "tiny_and_huge":  # points (the low-pass blob alone), and Gaussians far larger than the view
        means = torch.tensor(
            [[0.0, 0.0, 0.0], [0.1, 0.05, -0.1], [0.0, 0.0, 0.5], [-0.2, 0.1, 1.0], [0.3, -0.2, 0.2]]
        )
        quats = torch.randn(5, 4, generator=torch.Generator().manual_seed(11))
        scales = torch.tensor(
            [[1e-7] * 3, [1e-5, 1e-5, 1e-5], [20.0, 20.0, 20.0], [2.0, 0.01, 5.0], [1e-4, 3.0, 1e-4]]
        )
        opacities = torch.tensor([0.9, 0.6, 0.3, 0.5, 0.7])
        colors = torch.rand(5, 3, generator=torch.Generator().manual_seed(12))
    elif kind == "stopped_rows":  # an opaque wall stops whole tile rows; smaller Gaussians behind it
        g = torch.Generator().manual_seed(13)
        n = 60
        wall = (
            torch.tensor([[0.0, -0.25, -0.3]])
            + torch.tensor([[0.0, 1.0, 0.0]]) * torch.linspace(0, 0.2, 8)[:, None]
        )
        means = torch.cat([wall, (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.8, 0.6, 0.2])])
        quats = torch.cat([torch.tensor([[1.0, 0, 0, 0]]).expand(8, 4), torch.randn(n, 4, generator=g)])
        scales = torch.cat([torch.tensor([[0.6, 0.06, 0.01]]).expand(8, 3),
                            torch.exp(torch.empty(n, 3).uniform_(-4.5, -2.5, generator=g))])  # fmt: skip
        opacities = torch.cat([torch.ones(8), torch.empty(n).uniform_(0.2, 1.0, generator=g)])
        colors = torch.rand(8 + n, 3, generator=g)
    else:
        raise ValueError(kind)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors)]


def _run(backend: str, scene, cams: Camera, background, groups=None):
    """Render with gradients to every input (the scene and the cameras); returns the output, the gradients
    of the scene tensors, world_to_cam and intrinsics, and means2d's retained gradient."""
    leaves = [t.clone().requires_grad_() for t in scene]
    w2c, intr = cams.world_to_cam.clone().requires_grad_(), cams.intrinsics.clone().requires_grad_()
    cams = Camera(w2c, intr, cams.width, cams.height)
    out = rasterize(*leaves, cams, background=background, backend=backend, groups=groups)
    weights = torch.rand(
        *out.image.shape[:-1], out.image.shape[-1] + 2, generator=torch.Generator().manual_seed(11)
    ).to(out.image.dtype)
    (torch.cat([out.image, out.alpha, out.depth], -1) * weights).sum().backward()
    return out, [t.grad for t in (*leaves, w2c, intr)], out.means2d.grad


def _at_interface(pixels, scene, cams: Camera, groups=None, dtype=None):
    """Outputs (colour, alpha, weighted depth) and gradients at the compositing interface (2D means,
    conics, opacities, depths, colours), on the reference's projection; with ``dtype``, that projection's
    values converted to it before compositing."""
    means, quats, scales, opacities, colors = scene
    with torch.no_grad():
        p = project_gaussians(
            means, covariance_3d(quats, scales), opacities, cams.world_to_cam, cams.intrinsics,
            cams.width, cams.height,
        )  # fmt: skip
    dtype = dtype or means.dtype
    leaves = [t.to(dtype).clone().requires_grad_() for t in (p.means2d, p.conics, opacities, p.depths)]
    cols = colors.expand(len(cams), *colors.shape[-2:]).to(dtype).clone().requires_grad_()
    proj = Projected(leaves[0], leaves[1], leaves[3], p.radii)
    outs = pixels(proj, leaves[2], cols, cams.width, cams.height, groups=groups)
    weights = torch.rand(
        *outs[1].shape[:-1], outs[0].shape[-1] + 2, generator=torch.Generator().manual_seed(12)
    )
    (torch.cat(outs, -1) * weights.to(dtype)).sum().backward()
    return [t.detach() for t in outs], [t.grad for t in (*leaves, cols)]


def _compare_at_interface(scene, cams: Camera, groups) -> None:
    """Float32, on the same projected inputs: outputs to 1e-5 absolute, gradients to 1e-5 relative to the
    largest; or, where the two differ more, the compiled result no further than the reference's from the
    exact result (the reference in float64 on the same inputs): the sums of a Gaussian spanning the whole
    image can lose more than that to float32 rounding in either backend."""
    ref_outs, ref_g = _at_interface(rasterize_pixels, scene, cams, groups)
    new_outs, new_g = _at_interface(rasterize_pixels_numba, scene, cams, groups)
    exact_outs, exact_g = _at_interface(rasterize_pixels, scene, cams, groups, torch.float64)
    names = ("colour", "alpha", "depth", "means2d", "conics", "opacities", "depths", "colors")
    results = zip(names, [*ref_outs, *ref_g], [*new_outs, *new_g], [*exact_outs, *exact_g])
    for k, (name, a, b, exact) in enumerate(results):
        tol = TOL if k < 3 else TOL * max(float(a.abs().max()), 1.0)
        if (a - b).abs().max() <= tol:
            continue
        ref_err, new_err = ((t.double() - exact).abs().max() for t in (a, b))
        assert new_err <= ref_err, (
            f"{name} at the compositing interface: {new_err} from exact, torch's {ref_err}"
        )


def _assert_images_agree(ref, new, what: str) -> None:
    for name in ("image", "alpha", "depth"):
        a, b = getattr(ref, name).detach(), getattr(new, name).detach()
        assert (a - b).abs().max() <= TOL, f"{what}: {name}"
    assert torch.equal(ref.radii, new.radii) and torch.equal(ref.visible, new.visible), what


def _compare_final_images(scene, cams: Camera, background, groups) -> None:
    """The compiled backend's one pass to the final image (image over the background, depth divided by
    alpha), without gradients, on the reference's projection, against the reference's arithmetic."""
    with torch.no_grad():
        means, quats, scales, opacities, colors = scene
        p = project_gaussians(
            means, covariance_3d(quats, scales), opacities, cams.world_to_cam, cams.intrinsics,
            cams.width, cams.height,
        )  # fmt: skip
        colors = colors.expand(len(cams), *colors.shape[-2:])
        color, alpha, depth_sum = rasterize_pixels(
            p, opacities, colors, cams.width, cams.height, groups=groups
        )
        bg = _background(background, tuple(color.shape), color.dtype, color.device)
        image, alpha_new, depth = rasterize_image_numba(
            p, opacities, colors, bg, cams.width, cams.height, groups
        )
        assert (image - (color + (1.0 - alpha) * bg)).abs().max() <= TOL, "rendering: image"
        assert (alpha_new - alpha).abs().max() <= TOL, "rendering: alpha"
        assert (depth - depth_sum / alpha.clamp(min=1e-10)).abs().max() <= TOL, "rendering: depth"


def _compare_with_float64(scene, cams: Camera, background, groups, ref32, new32) -> None:
    """Float32 end to end: the compiled backend (float64 projection) is no further from the float64
    reference than the torch backend's float32 result is, or within 1e-5 of it."""
    bg64 = background.double() if isinstance(background, torch.Tensor) else background
    with torch.no_grad():
        truth = rasterize(*[t.double() for t in scene], cams.to(dtype=torch.float64), background=bg64,
                          backend="torch", groups=groups)  # fmt: skip
    for name in ("image", "alpha", "depth"):
        exact = getattr(truth, name)
        ref_err = float((getattr(ref32, name).detach().double() - exact).abs().max())
        new_err = float((getattr(new32, name).detach().double() - exact).abs().max())
        assert new_err <= max(ref_err, TOL), f"float32 {name}: {new_err} from float64, torch's {ref_err}"


def _compare(scene, cams: Camera, background=0.25, groups=None):
    """Both backends, with gradients (training) and without (rendering), outputs and gradients."""
    ref, ref_grads, ref_m2d = _run("torch", scene, cams, background, groups)
    new, new_grads, new_m2d = _run("numba", scene, cams, background, groups)
    assert new.backend == "numba"
    with torch.no_grad():
        rendered = rasterize(*scene, cams, background=background, backend="numba", groups=groups)
        no_depth = rasterize(*scene, cams, background=background, backend="numba", groups=groups, depth=False)
    _assert_images_agree(new, rendered, "rendering and training")
    assert no_depth.depth is None, "rendering without the depth"
    assert torch.equal(no_depth.image, rendered.image) and torch.equal(no_depth.alpha, rendered.alpha)
    _compare_final_images(scene, cams, background, groups)
    if scene[0].dtype == torch.float64:
        _assert_images_agree(ref, new, "end to end")
        names = ("means", "quats", "scales", "opacities", "colors", "world_to_cam", "intrinsics", "means2d")
        for name, a, b in zip(names, [*ref_grads, ref_m2d], [*new_grads, new_m2d]):
            scale = 1.0 if name not in ("world_to_cam", "intrinsics") else max(float(a.abs().max()), 1.0)
            assert (a - b).abs().max() <= TOL * scale, f"gradient of {name}"
    else:
        _compare_with_float64(scene, cams, background, groups, ref, new)
        _compare_at_interface(scene, cams, groups)


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
     "off_screen_and_behind", "opacity_extremes", "tile_crossing", "tiny_and_huge", "stopped_rows"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_degenerate_scenes_agree(kind, dtype):
    _compare(_degenerate_scene(kind, dtype), _camera(64, 48, 2, dtype))


def test_a_trained_head_sized_scene_agrees_in_float32():
    scene = head_shell(3000, seed=3)
    _compare(list(scene.tensors()), orbit_cameras(2, 128, max_yaw_degrees=35))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_groups_agree(dtype):
    """The fused face-over-mouth render: every Gaussian of a lower group in front, whatever its depth."""
    scene = _random_scene(400, 3, 5, dtype)
    groups = torch.randint(0, 3, (400,), generator=torch.Generator().manual_seed(6), dtype=torch.int32)
    _compare(scene, _camera(80, 64, 2, dtype), background=0.5, groups=groups)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backgrounds_and_per_camera_colours_agree(dtype):
    """Per-camera colours and every background form the one-pass render composites over."""
    means, quats, scales, opacities, _ = _random_scene(150, 3, 7, dtype)
    cams = _camera(50, 70, 3, dtype)  # sizes that are not whole tiles
    per_camera = torch.rand(3, 150, 3, generator=torch.Generator().manual_seed(8)).to(dtype)
    scene = [means, quats, scales, opacities, per_camera]
    g = torch.Generator().manual_seed(9)
    _compare(scene, cams, torch.rand(3, 70, 50, 3, generator=g).to(dtype))
    backgrounds = [
        None, 0.3, torch.rand(3, generator=g).to(dtype), torch.rand(3, 3, generator=g).to(dtype),
        torch.rand(70, 50, 3, generator=g).to(dtype),
    ]  # fmt: skip
    for background in backgrounds:
        _compare_final_images(scene, cams, background, None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["random", "stopped_rows", "needles"])
def test_densification_statistics_agree(kind, dtype):
    """``rasterize(stats=...)``: both backends' sums over pixels of |∂L/∂mean2d| per axis and of each
    Gaussian's blending weight agree (1e-5 of the largest), end to end in float64 and, in float32, on the
    same projected inputs (as the other float32 comparisons); the weights sum to the image's alpha, and
    the absolute sums bound the summed gradient."""
    scene = _random_scene(300, 3, 4, dtype) if kind == "random" else _degenerate_scene(kind, dtype)
    cams = _camera(72, 56, 2, dtype)
    background = torch.rand(2, 56, 72, 3, generator=torch.Generator().manual_seed(5)).to(dtype)
    means, quats, scales, opacities, colors = scene
    with torch.no_grad():
        p = project_gaussians(means, covariance_3d(quats, scales), opacities, cams.world_to_cam,
                              cams.intrinsics, cams.width, cams.height)  # fmt: skip
    found = {}
    for backend in ("torch", "numba"):
        stats = {}
        if dtype == torch.float64:  # end to end
            leaves = [t.clone().requires_grad_() for t in scene]
            out = rasterize(*leaves, cams, background=background, backend=backend, stats=stats)
            assert out.stats is stats
            image, alpha, means2d = out.image, out.alpha, out.means2d
        else:  # at the compositing interface
            means2d = p.means2d.clone().requires_grad_()
            proj = Projected(means2d, p.conics.clone().requires_grad_(), p.depths, p.radii)
            pixels = rasterize_pixels if backend == "torch" else rasterize_pixels_numba
            colour, alpha, _ = pixels(proj, opacities, colors.expand(2, -1, -1), 72, 56, stats=stats)
            image = colour + (1 - alpha) * background
        weights = torch.rand(*image.shape, generator=torch.Generator().manual_seed(6)).to(dtype) - 0.5
        ((image * weights).sum() + 0.3 * alpha.sum()).backward()
        assert stats["absgrad"].shape == (2, len(means), 2) and stats["weight"].shape == (2, len(means))
        assert torch.allclose(stats["weight"].sum(1), alpha.detach().double().sum((1, 2, 3)), rtol=1e-4)
        assert (stats["absgrad"] >= means2d.grad.double().abs() * (1 - 1e-5) - 1e-6).all()
        found[backend] = stats
    for key in ("absgrad", "weight"):
        a, b = found["torch"][key], found["numba"][key]
        assert (a - b).abs().max() <= 1e-5 * max(float(a.abs().max()), 1.0), key


def test_nothing_visible_renders_the_background():
    scene = _degenerate_scene("off_screen_and_behind")
    means = scene[0] + torch.tensor([0.0, 0.0, -10.0])  # all behind the camera
    cams = _camera(40, 30, 2)
    bg = torch.rand(2, 30, 40, 3)
    with torch.no_grad():
        out = rasterize(means, *scene[1:], cams, background=bg, backend="numba")
    assert torch.equal(out.image, bg) and not out.alpha.any() and not out.depth.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_draw_order_and_boxes_match_the_reference(dtype):
    """The radix sort keeps torch's stable order (ties by index, -0.0 equal to 0.0, groups first), and the
    compiled pixel boxes are the torch backend's."""
    rng = np.random.default_rng(0)
    for n in (3000, 10_000):  # a merge sort below 4096 Gaussians, the radix sort above
        depths = rng.normal(size=n).astype(dtype)
        depths[rng.integers(0, n, n // 5)] = 0.25
        depths[rng.integers(0, n, 50)] = -0.0
        depths[rng.integers(0, n, 50)] = 0.0
        for groups in (None, torch.from_numpy(rng.integers(-2, 3, n).astype(np.int32))):
            expected = torch_backend.draw_order(torch.from_numpy(depths), groups).numpy()
            got = nk.draw_order(depths, np.zeros(0, np.int32) if groups is None else groups.numpy())
            assert np.array_equal(got, expected)
    means2d = torch.from_numpy(rng.uniform(-40, 140, (3000, 2)).astype(dtype))
    means2d[:100] = torch.from_numpy(rng.integers(-5, 105, (100, 2)).astype(dtype) + dtype(0.5))  # on centres
    radii = torch.from_numpy(rng.integers(0, 30, (3000, 2)).astype(np.int32))
    visible = (radii > 0).all(-1)
    expected = torch_backend.pixel_boxes(means2d, radii, visible, 100, 77).numpy()
    got = nk.pixel_boxes(means2d.numpy(), radii.numpy(), 100, 77, dtype(0.5))
    assert np.array_equal(got[visible.numpy()], expected[visible.numpy()])
    assert (got[~visible.numpy(), 1] < got[~visible.numpy(), 0]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_exponential_is_accurate(dtype):
    x = np.concatenate([np.linspace(0, 90, 200_001), [1e-30, 5.5451774, 80.0, 1e30]]).astype(dtype)
    got = _exp_neg_all(x)
    expected = np.exp(-x.astype(np.float64))
    normal = expected > np.finfo(dtype).tiny * 2**24
    ulps = np.abs(got[normal] - expected[normal].astype(dtype)) / np.spacing(expected[normal].astype(dtype))
    assert ulps.max() <= (2 if dtype == np.float32 else 4)
    assert (got >= 0).all() and (got <= 1).all()


@njit
def _exp_neg_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = nk.exp_neg(x[i])
    return out


def test_tiles_are_shared_by_cost_and_all_run_once():
    """Parts interleave the tiles, so a dense band (a face filling part of the frame) is shared by all."""
    threads.configure(2)
    try:
        costs = np.random.default_rng(1).integers(1, 500, 1024)
        costs[:100] = 5000  # a dense band
        parts = threads.split_tiles(np.arange(1024), costs)
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1024))
        totals = [costs[p].sum() for p in parts]
        assert max(totals) - min(totals) <= 2 * costs.max()
        assert len(parts) == 8
        assert all(np.isin(np.arange(100), p).sum() in (12, 13) for p in parts)
    finally:
        threads.configure()


def _box_bins(boxes, order, width, height):
    """The binning before ellipse culling, in Python: every tile of each Gaussian's box, front to back."""
    tiles_x, tiles_y = -(-width // nk.TILE_W), -(-height // nk.TILE_H)
    lists = [[] for _ in range(tiles_x * tiles_y)]
    for g in order:
        x0, x1, y0, y1 = boxes[g]
        if x1 < x0 or y1 < y0:
            continue
        for ty in range(y0 // nk.TILE_H, y1 // nk.TILE_H + 1):
            for tx in range(x0 // nk.TILE_W, x1 // nk.TILE_W + 1):
                lists[ty * tiles_x + tx].append(g)
    start = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    return start, np.array([g for x in lists for g in x], np.int32)


@pytest.mark.parametrize("kind", ["needles", "tile_crossing", "random"])
def test_binning_keeps_every_pair_the_alpha_ellipse_reaches(kind):
    """The tile lists leave out only tiles where every pixel of the box has alpha < 1/255 (checked pixel by
    pixel in float64), and compositing from them gives the box binning's images and gradients bit for bit."""
    width, height = 64, 48
    scene = _random_scene(200, 3, 3) if kind == "random" else _degenerate_scene(kind)
    cams = _camera(width, height)
    means, quats, scales, opacities, colors = scene
    with torch.no_grad():
        p = project_gaussians(means, covariance_3d(quats, scales), opacities, cams.world_to_cam,
                              cams.intrinsics, width, height)  # fmt: skip
    m2d, con, op = (np.ascontiguousarray(t.numpy()) for t in (p.means2d[0], p.conics[0], opacities))
    boxes = nk.pixel_boxes(m2d, p.radii[0].numpy(), width, height, np.float32(0.5))
    order = nk.draw_order(p.depths[0].numpy(), np.zeros(0, np.int32))
    start, ids, _ = nk.bin_tiles(boxes, order, width, height, m2d, con, op, 1 / 255)
    full_start, full_ids = _box_bins(boxes, order, width, height)
    tiles_x = -(-width // nk.TILE_W)
    listed = {(t, int(g)) for t in range(len(start) - 1) for g in ids[start[t] : start[t + 1]]}
    assert listed <= {
        (t, int(g)) for t in range(len(full_start) - 1) for g in full_ids[full_start[t] : full_start[t + 1]]
    }
    for g in range(len(op)):
        x0, x1, y0, y1 = boxes[g]
        if x1 < x0 or y1 < y0:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        dx, dy = xs - float(m2d[g, 0]), ys - float(m2d[g, 1])
        a, b, c = (float(v) for v in con[g])
        alpha = float(op[g]) * np.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        used = alpha >= 1 / 255 * (1 - 1e-6)
        for r, col in zip(*np.nonzero(used)):
            tile = ((y0 + r) // nk.TILE_H) * tiles_x + (x0 + col) // nk.TILE_W
            assert (tile, g) in listed, f"{kind}: Gaussian {g} dropped from tile {tile}"
    if kind == "needles":
        assert len(ids) < 0.8 * len(full_ids)
    # compositing from either binning: the same images, transmittances and gradients
    consts = np.array([0.5, 1 / 255, 0.99, 1.0, 1e-4 * (1 - 1e-9), 0.0, 1e-10], np.float32)
    xs_, ys_ = (
        np.arange(n * k) + np.float32(0.5)
        for n, k in ((tiles_x, nk.TILE_W), (-(-height // nk.TILE_H), nk.TILE_H))
    )
    xs_, ys_ = xs_.astype(np.float32), ys_.astype(np.float32)
    col3, dep = np.ascontiguousarray(colors.numpy()), np.ascontiguousarray(p.depths[0].numpy())
    tiles = np.arange(len(start) - 1)
    results = []
    for st, idl in ((start, ids), (full_start, full_ids)):
        rng = np.random.default_rng(0)
        outs = (np.zeros((height, width, 3), np.float32), np.zeros((height, width), np.float32),
                np.zeros((height, width), np.float32), np.zeros((height, width), np.float32),
                np.zeros((height, width), np.int32))  # fmt: skip
        args = (st, idl, boxes, xs_, ys_, m2d, con, op, dep, col3, consts)
        nk.forward_tiles(tiles, *args, *outs, np.zeros((0, 0, 0), np.float32))
        g_colour, g_alpha, g_depth = (
            rng.random(shape, np.float32) for shape in ((height, width, 3),) + ((height, width),) * 2
        )
        no_bg = (np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32))
        entry = np.zeros((len(idl), 10))
        nk.backward_tiles(tiles, *args, outs[3], outs[4], *no_bg, g_colour, g_alpha, g_depth, entry)
        grads = np.zeros((len(op), 10))
        nk.sum_entries(idl, entry, grads)
        results.append((outs[:3], grads))
    (new_outs, new_grads), (old_outs, old_grads) = results
    for a, b in zip(new_outs, old_outs):
        assert np.array_equal(a, b)
    assert np.allclose(new_grads, old_grads, rtol=1e-6, atol=1e-9)


def test_parts_run_once_even_when_the_workers_are_busy():
    """A worker the OS has not scheduled (here: busy with something else) delays nothing: the calling
    thread takes every part and the idle helper is cancelled, not waited for."""
    threads.configure(2)
    release = Event()
    try:
        blocker = threads._pool.submit(release.wait, 30)  # the only worker is busy
        seen = []
        start = time.perf_counter()
        threads.for_each_part(seen.append, list(range(10)))
        assert sorted(seen) == list(range(10)) and time.perf_counter() - start < 5
        release.set()
        blocker.result()
        seen.clear()
        threads.for_each_part(seen.append, list(range(10)))  # with the worker free, still once each
        assert sorted(seen) == list(range(10))
        with pytest.raises(ZeroDivisionError):
            threads.for_each_part(lambda k: 1 / (k - 7), list(range(10)))
    finally:
        release.set()
        threads.configure()
