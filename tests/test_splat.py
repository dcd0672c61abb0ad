"""The rasterizer: analytic renders, compositing rules, gradients against finite differences, edge cases."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from gstalk.splat import Camera, look_at, rasterize, resolve_backend
from gstalk.splat.scenes import head_shell, orbit_cameras

F64 = torch.float64
#: the two CPU backends; every analytic case below runs on both
CPU_BACKENDS = ["torch", "numba"]


def draw(backend: str, *args, **kwargs):
    return rasterize(*args, backend=backend, **kwargs)


def front_camera(width=32, height=24, f=40.0, distance=2.0, dtype=torch.float32) -> Camera:
    w2c = look_at(torch.tensor([0.0, 0.0, -distance]), torch.zeros(3)).to(dtype)
    k = torch.tensor([f, f, width / 2, height / 2], dtype=dtype)
    return Camera(w2c, k, width, height)


def iso(means, sigma, opacity, color, dtype=torch.float32):
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = means.shape[0]
    return (
        means,
        torch.tensor([[1.0, 0, 0, 0]], dtype=dtype).expand(n, 4),
        torch.full((n, 3), float(sigma), dtype=dtype),
        torch.as_tensor(opacity, dtype=dtype).expand(n).clone(),
        torch.as_tensor(color, dtype=dtype).reshape(n, -1),
    )


def analytic_alpha(cam: Camera, u0, v0, var, opacity):
    v, u = torch.meshgrid(
        torch.arange(cam.height, dtype=F64) + 0.5, torch.arange(cam.width, dtype=F64) + 0.5, indexing="ij"
    )
    a = torch.clamp(opacity * torch.exp(-0.5 * ((u - u0) ** 2 + (v - v0) ** 2) / var), max=0.99)
    return torch.where(a >= 1 / 255, a, torch.zeros_like(a))


def test_camera_convention_x_right_y_down_z_forward():
    cam = front_camera(dtype=F64)
    p = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]], dtype=F64)
    cam_pts = p @ cam.world_to_cam[0, :3, :3].T + cam.world_to_cam[0, :3, 3]
    fx, fy, cx, cy = cam.intrinsics[0]
    u = fx * cam_pts[:, 0] / cam_pts[:, 2] + cx
    v = fy * cam_pts[:, 1] / cam_pts[:, 2] + cy
    assert torch.allclose(cam_pts[:, 2], torch.full((3,), 2.0, dtype=F64))
    assert u[0] == cx and v[0] == cy
    assert u[1] > cx and v[1] == cy  # +x is right
    assert v[2] > cy and u[2] == cx  # +y is down


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_one_isotropic_gaussian_matches_closed_form(backend):
    cam = front_camera(dtype=F64)
    sigma, opacity, dist, f = 0.05, 0.8, 2.0, 40.0
    out = draw(
        backend,
        *iso([0, 0, 0], sigma, opacity, [0.2, 0.5, 1.0], F64),
        cam,
        background=torch.ones(3, dtype=F64),
    )
    var = (f * sigma / dist) ** 2 + 0.3  # EWA at the optical axis plus the 0.3 px² low-pass
    alpha = analytic_alpha(cam, 16.0, 12.0, var, opacity)
    assert torch.allclose(out.alpha[0, ..., 0], alpha, atol=1e-12)
    expected = alpha[..., None] * torch.tensor([0.2, 0.5, 1.0], dtype=F64) + (1 - alpha[..., None])
    assert torch.allclose(out.image[0], expected, atol=1e-12)
    covered = alpha > 0
    assert torch.allclose(out.depth[0, ..., 0][covered], torch.full_like(alpha[covered], dist))
    assert (out.depth[0, ..., 0][~covered] == 0).all()
    assert out.means2d[0, 0].tolist() == [16.0, 12.0]
    assert out.visible.tolist() == [[True]]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_pixel_centres_are_at_half_pixels(backend):
    # a Gaussian centred exactly on the centre of pixel (row 3, col 5) peaks there, symmetric around it
    cam = front_camera(width=11, height=7, dtype=F64)
    fx, fy, cx, cy = cam.intrinsics[0].tolist()
    x, y = (5.5 - cx) * 2.0 / fx, (3.5 - cy) * 2.0 / fy
    out = draw(backend, *iso([x, y, 0], 0.02, 0.9, [1.0], F64), cam)
    img = out.image[0, ..., 0]
    assert divmod(int(img.argmax()), 11) == (3, 5)
    assert torch.isclose(img[3, 4], img[3, 6]) and torch.isclose(img[2, 5], img[4, 5])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_front_to_back_occlusion_and_depth(backend):
    cam = front_camera(dtype=F64)
    near = iso([0, 0, -0.5], 0.05, 0.7, [1.0, 0.0, 0.0], F64)
    far = iso([0, 0, 0.5], 0.05, 0.6, [0.0, 1.0, 0.0], F64)
    both = [torch.cat([a, b]) for a, b in zip(near, far)]
    out = draw(backend, *both, cam)
    centre = out.image[0, 12, 16]
    a_near = out_alpha_single(cam, near, backend)
    a_far = out_alpha_single(cam, far, backend)
    assert torch.allclose(centre, torch.tensor([a_near, (1 - a_near) * a_far, 0.0], dtype=F64))
    w_near, w_far = a_near, (1 - a_near) * a_far
    assert torch.isclose(
        out.depth[0, 12, 16, 0], torch.tensor((w_near * 1.5 + w_far * 2.5) / (w_near + w_far), dtype=F64)
    )
    # the order of the inputs does not matter, only depth
    swapped = draw(backend, *[torch.cat([b, a]) for a, b in zip(near, far)], cam)
    assert torch.allclose(swapped.image, out.image)


def out_alpha_single(cam, g, backend):
    return float(draw(backend, *g, cam).alpha[0, 12, 16, 0])


@pytest.mark.parametrize(("third_opacity", "third_counts"), [(0.99, False), (0.3, True)])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_alpha_clamp_and_transmittance_cutoff(third_opacity, third_counts, backend):
    """Three stacked Gaussians centred on one pixel centre, front to back.

    The first has opacity 1 and is clamped to alpha 0.99; the second (0.985) leaves T = 1.5e-4. A third
    with alpha 0.99 would take T to 1.5e-6 < 1e-4, so the pixel stops before it; one with alpha 0.3 leaves
    T = 1.05e-4 and still counts.
    """
    cam = front_camera(dtype=F64)
    z = torch.tensor([-0.2, 0.0, 0.2], dtype=F64)
    # put every centre on the centre of pixel (row 12, col 16), i.e. (u, v) = (16.5, 12.5)
    means = torch.stack([0.5 * (2 + z) / 40, 0.5 * (2 + z) / 40, z], 1)
    stack = iso(means, 0.01, 1.0, [[1.0], [10.0], [100.0]], F64)
    stack[3][1:] = torch.tensor([0.985, third_opacity], dtype=F64)
    out = draw(backend, *stack, cam)
    weights = [0.99, 0.01 * 0.985, 1.5e-4 * third_opacity if third_counts else 0.0]
    assert out.alpha[0, 12, 16, 0].item() == pytest.approx(sum(weights), abs=1e-12)
    assert out.image[0, 12, 16, 0].item() == pytest.approx(
        weights[0] + 10 * weights[1] + 100 * weights[2], abs=1e-10
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batch_of_cameras_equals_one_by_one(backend):
    scene = head_shell(600, seed=1)
    cams = orbit_cameras(3, 48, max_yaw_degrees=40)
    batch = draw(backend, *scene.tensors(), cams, background=torch.tensor([0.1, 0.2, 0.3]))
    for i in range(3):
        single = draw(backend, *scene.tensors(), cams[i], background=torch.tensor([0.1, 0.2, 0.3]))
        assert torch.allclose(batch.image[i], single.image[0], atol=1e-6)
        assert torch.equal(batch.radii[i], single.radii[0])
    assert not torch.allclose(batch.image[0], batch.image[2])


def test_banded_pairs_match_unbanded_forward_and_gradients():
    scene = head_shell(400, seed=2)
    cam = orbit_cameras(2, 40)
    results = []
    for max_pairs in (10_000_000, 3000):
        inputs = [t.clone().requires_grad_() for t in scene.tensors()]
        out = rasterize(*inputs, cam, max_pairs=max_pairs, backend="torch")
        (out.image * torch.linspace(0, 1, 3)).sum().backward()
        results.append((out.image.detach(), [t.grad for t in inputs]))
    (img_a, grads_a), (img_b, grads_b) = results
    assert torch.allclose(img_a, img_b, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)


def _gradcheck_scene():
    g = torch.Generator().manual_seed(3)
    n = 5
    means = (torch.rand(n, 3, generator=g, dtype=F64) - 0.5) * torch.tensor([0.6, 0.4, 0.6], dtype=F64)
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = 0.04 + 0.05 * torch.rand(n, 3, generator=g, dtype=F64)
    opacities = 0.3 + 0.5 * torch.rand(n, generator=g, dtype=F64)
    colors = torch.rand(n, 3, generator=g, dtype=F64)
    cams = Camera.cat(
        [
            front_camera(14, 10, f=12.0, dtype=F64),
            Camera(
                look_at(torch.tensor([0.4, -0.2, -1.8]), torch.zeros(3)).to(F64),
                torch.tensor([11.0, 12.0, 6.5, 5.0], dtype=F64),
                14,
                10,
            ),
        ]
    )
    background = torch.rand(2, 10, 14, 3, generator=g, dtype=F64)
    return means, quats, scales, opacities, colors, cams, background


@pytest.mark.parametrize(
    "which", ["means", "quats", "scales", "opacities", "colors", "background", "world_to_cam", "intrinsics"]
)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_finite_differences(which, backend):
    means, quats, scales, opacities, colors, cams, background = _gradcheck_scene()
    inputs = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "background": background,
        "world_to_cam": cams.world_to_cam,
        "intrinsics": cams.intrinsics,
    }
    weights = torch.rand(2, 10, 14, 5, generator=torch.Generator().manual_seed(4), dtype=F64)

    def render(x):
        args = dict(inputs, **{which: x})
        cam = Camera(args["world_to_cam"], args["intrinsics"], 14, 10)
        out = draw(
            backend,
            args["means"],
            args["quats"],
            args["scales"],
            args["opacities"],
            args["colors"],
            cam,
            background=args["background"],
        )
        # image, alpha and depth all carry gradients
        return torch.cat([out.image, out.alpha, out.depth], -1) * weights

    x = inputs[which].clone().requires_grad_()
    assert torch.autograd.gradcheck(render, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_means2d_retains_gradient_for_densification(backend):
    scene = head_shell(300, seed=5)
    means = scene.means.clone().requires_grad_()
    out = draw(backend, means, *scene.tensors()[1:], orbit_cameras(1, 32))
    out.image.sum().backward()
    assert out.means2d.grad is not None and out.means2d.grad.shape == (1, 300, 2)
    assert (out.means2d.grad[~out.visible] == 0).all()
    assert out.means2d.grad[out.visible].abs().sum() > 0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_gaussians_gives_the_background(backend):
    cam = front_camera()
    empty = [torch.zeros(0, k) for k in (3, 4, 3)] + [torch.zeros(0), torch.zeros(0, 3)]
    bg = torch.rand(24, 32, 3)
    out = draw(backend, *empty, cam, background=bg)
    assert torch.equal(out.image[0], bg) and (out.alpha == 0).all() and (out.depth == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gaussians_behind_the_camera_are_culled(backend):
    cam = front_camera()
    out = draw(backend, *iso([[0, 0, -2.5], [0, 0, -2.0]], 0.1, 0.9, [[1.0, 1, 1]] * 2), cam, background=0.25)
    assert torch.allclose(out.image, torch.full_like(out.image, 0.25))
    assert not out.visible.any() and (out.radii == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_tiny_and_huge_scales_stay_finite(backend):
    cam = front_camera()
    tiny = draw(backend, *iso([0, 0, 0], 1e-9, 0.9, [1.0, 1.0, 1.0]), cam)
    # a point-sized Gaussian is still drawn as the 0.3 px² low-pass blob
    assert tiny.alpha.max() == pytest.approx(0.9 * math.exp(-0.5 * 0.5 / 0.3), rel=1e-4)
    huge = draw(backend, *iso([0, 0, 0], 1e3, 0.5, [1.0, 1.0, 1.0]), cam)
    assert torch.isfinite(huge.image).all()
    assert torch.allclose(huge.alpha, torch.full_like(huge.alpha, 0.5), atol=1e-4)


@pytest.mark.parametrize("field", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nan_input_is_a_clear_error(field, backend):
    args = list(iso([[0, 0, 0], [0.1, 0, 0]], 0.05, 0.5, [[1.0, 1, 1]] * 2))
    args[field] = args[field].clone()
    args[field].view(-1)[-1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        draw(backend, *args, front_camera())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_shapes_are_clear_errors(backend):
    means, quats, scales, ops, cols = iso([0, 0, 0], 0.05, 0.5, [1.0, 1, 1])
    with pytest.raises(ValueError, match="quats must have shape"):
        draw(backend, means, quats[:, :3], scales, ops, cols, front_camera())
    with pytest.raises(ValueError, match="background must be"):
        draw(backend, means, quats, scales, ops, cols, front_camera(), background=torch.zeros(5, 5, 3))
    with pytest.raises(ValueError, match="non-negative"):
        draw(backend, means, quats, -scales, ops, cols, front_camera())


def test_cpu_never_imports_gsplat():
    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    out = rasterize(*iso([0, 0, 0], 0.05, 0.5, [1.0, 1, 1]), front_camera())
    assert out.backend == "numba"
    assert "gsplat" not in sys.modules
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA"):
            rasterize(*iso([0, 0, 0], 0.05, 0.5, [1.0, 1, 1]), front_camera(), backend="gsplat")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_inference_path_matches_the_differentiable_path(backend):
    scene = head_shell(800, seed=9)
    cams = orbit_cameras(2, 48)
    with torch.no_grad():
        fast = draw(backend, *scene.tensors(), cams, background=0.3)
    leaves = [t.clone().requires_grad_() for t in scene.tensors()]
    slow = draw(backend, *leaves, cams, background=0.3)
    assert torch.allclose(fast.image, slow.image.detach(), atol=1e-6)
    assert torch.allclose(fast.depth, slow.depth.detach(), atol=1e-5)


def test_float_to_uint8_matches_the_torch_formula():
    """The compiled 8-bit conversion rounds exactly as ``(x.clamp(0, 1) * 255 + 0.5).to(uint8)`` in float32,
    including the values whose float32 product lands on k + 0.5, and clips out-of-range values."""
    from gstalk.splat.images import float_to_uint8

    k = torch.arange(256, dtype=torch.float32)
    edges = torch.cat([(k + 0.5) / 255, k / 255, torch.nextafter((k + 0.5) / 255, torch.zeros(1))])
    values = torch.cat([edges, torch.tensor([-1e30, -0.0, -0.2, 1.2, 1e30]), torch.rand(50_000) * 1.4 - 0.2])
    image = values[: 3 * (values.numel() // 3)].reshape(-1, 1, 3)
    expected = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert (float_to_uint8(image.numpy()) == expected).all()


def test_uint8_to_float_is_the_torch_division():
    """The compiled 8-bit to float conversion is PyTorch's ``x.float() / 255`` bit for bit, every value,
    any shape (layers and targets are made with it)."""
    from gstalk.splat.images import uint8_to_float

    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(torch.from_numpy(uint8_to_float(every.numpy())), every.float() / 255)
    image = torch.randint(0, 256, (37, 29, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    converted = uint8_to_float(image.numpy())
    assert converted.dtype == "float32" and converted.shape == (37, 29, 3)
    assert torch.equal(torch.from_numpy(converted), image.float() / 255)
