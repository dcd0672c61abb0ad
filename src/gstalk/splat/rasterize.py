"""``rasterize()``: one differentiable Gaussian renderer, three backends: compiled CPU tiles (numba), the
pure-PyTorch reference, and gsplat on CUDA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .camera import Camera
from .gsplat_backend import gsplat_available, rasterize_gsplat
from .projection import Projected, covariance_3d, project_gaussians
from .torch_backend import DEFAULT_MAX_PAIRS, rasterize_pixels

Backend = Literal["auto", "numba", "torch", "gsplat"]
BACKENDS = ("numba", "torch", "gsplat")


@dataclass
class RenderOutput:
    """What one call renders for C cameras and N Gaussians.

    image: (C, H, W, D) colour composited over the background.
    alpha: (C, H, W, 1) accumulated opacity.
    depth: (C, H, W, 1) expected camera-space z of the visible Gaussians (0 where alpha is 0); None when
        ``rasterize(depth=False)`` rendered without gradients on the compiled backend.
    means2d: (C, N, 2) screen-space centres in pixels. When the inputs need gradients it retains its
        gradient after ``backward()``: the signal densification uses.
    radii: (C, N, 2) int32 half extents of each Gaussian's screen box; 0 when culled.
    visible: (C, N) bool, the Gaussians that touched the image.
    backend: which backend produced it.
    stats: the ``stats`` dict given to ``rasterize`` (filled by ``backward()``), or None.
    """

    image: Tensor
    alpha: Tensor
    depth: Tensor | None
    means2d: Tensor
    radii: Tensor
    visible: Tensor
    backend: str
    stats: dict | None = None


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """``auto`` picks gsplat for CUDA tensors when it is installed, the compiled numba backend on the CPU,
    and the torch reference otherwise."""
    if backend == "auto":
        if device.type == "cuda":
            return "gsplat" if gsplat_available() else "torch"
        return "numba" if device.type == "cpu" else "torch"
    if backend == "gsplat" and not (device.type == "cuda" and gsplat_available()):
        raise RuntimeError(
            "backend='gsplat' needs CUDA tensors, a CUDA GPU and `pip install gsplat` (the [cuda] extra)"
        )
    if backend == "numba" and device.type != "cpu":
        raise RuntimeError("backend='numba' renders CPU tensors; use 'gsplat' or 'torch' on a GPU")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'numba', 'torch' or 'gsplat'")
    return backend


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    cameras: Camera,
    background: Tensor | float | None = None,
    backend: Backend = "auto",
    max_pairs: int = DEFAULT_MAX_PAIRS,
    groups: Tensor | None = None,
    stats: dict | None = None,
    depth: bool = True,
) -> RenderOutput:
    """Render N Gaussians into C cameras.

    means (N, 3) world positions; quats (N, 4) rotations ``w, x, y, z`` (need not be unit);
    scales (N, 3) standard deviations along the rotated axes (linear, not log); opacities (N,) in [0, 1];
    colors (N, D) or per camera (C, N, D), any number of channels D.
    background: a colour (D,) or (C, D), an image (H, W, D) or (C, H, W, D), a scalar, or None (black).
    max_pairs: memory bound of the torch backend, in pixel–Gaussian pairs held at once.
    groups: optional (N,) integers: Gaussians of a lower group are composited in front of every one of a
        higher group whatever their depths (a face over its mouth interior in one pass). Not supported by
        gsplat.
    stats: an empty dict for densification's statistics (CPU backends; gsplat leaves it empty), which the
        backward pass fills: ``absgrad`` (C, N, 2) float64, the sums over pixels of |∂L/∂mean2d| per axis
        (each pixel's pull on its own, so opposite pulls on a Gaussian too large for the detail under it
        do not cancel: AbsGS, Ye et al. 2024), and ``weight`` (C, N) float64, the sum over pixels of each
        Gaussian's blending weight alpha · T (its contribution to the image, LightGaussian's importance).
    depth: False skips the depth where it can (the compiled backend without gradients): ``depth`` is then
        None. A render that only shows the image (``render_portrait``) saves that work.
    """
    n_cams = len(cameras)
    colors = _check_inputs(means, quats, scales, opacities, colors, n_cams)
    cameras = cameras.to(device=means.device, dtype=means.dtype)
    chosen = resolve_backend(backend, means.device)
    if chosen == "gsplat":
        if groups is not None:
            raise ValueError("the gsplat backend composites by depth only; render each group separately")
        color, alpha, depth_out, means2d, radii = rasterize_gsplat(
            means, quats, scales, opacities, colors, cameras
        )
        image = color + (1.0 - alpha) * _background(background, tuple(color.shape), color.dtype, color.device)
    else:
        image, alpha, depth_out, proj = _rasterize_cpu(
            means,
            quats,
            scales,
            opacities,
            colors,
            cameras,
            background,
            chosen,
            max_pairs,
            groups,
            stats,
            depth,
        )
        if depth_out.shape[1] == 0:
            depth_out = None
        means2d, radii = proj.means2d, proj.radii
    if means2d.requires_grad:
        means2d.retain_grad()
    return RenderOutput(image, alpha, depth_out, means2d, radii, _visible(radii), chosen, stats)


def _rasterize_cpu(
    means,
    quats,
    scales,
    opacities,
    colors,
    cameras: Camera,
    background,
    chosen: str,
    max_pairs: int,
    groups,
    stats=None,
    depth: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Projected]:
    """The numba and torch backends: image, alpha, depth and the projection. The numba backend projects
    with its compiled copy of the projection and composites to the final image in one pass."""
    size = (cameras.width, cameras.height)
    if chosen == "numba":  # the compiled projection, with its own backward
        from .numba_backend import project_gaussians_numba

        proj = project_gaussians_numba(
            means, quats, scales, opacities, cameras.world_to_cam, cameras.intrinsics, *size
        )
    else:
        covars = covariance_3d(quats, scales)
        proj = project_gaussians(means, covars, opacities, cameras.world_to_cam, cameras.intrinsics, *size)
    shape = (len(cameras), cameras.height, cameras.width, colors.shape[-1])
    bg = _background(background, shape, means.dtype, means.device)
    if chosen == "numba":  # one compiled pass to the final image, alpha and depth
        from .numba_backend import rasterize_image_numba

        return (*rasterize_image_numba(proj, opacities, colors, bg, *size, groups, stats, depth), proj)
    color, alpha, depth_sum = rasterize_pixels(proj, opacities, colors, *size, max_pairs, groups, stats)
    return color + (1.0 - alpha) * bg, alpha, depth_sum / alpha.clamp(min=1e-10), proj


def _check_inputs(means, quats, scales, opacities, colors, n_cams: int) -> Tensor:
    n = means.shape[0]
    expected = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if tuple(opacities.shape) != (n,):
        raise ValueError(f"opacities must have shape ({n},), got {tuple(opacities.shape)}")
    if colors.ndim == 2:
        colors = colors.expand(n_cams, *colors.shape)
    if colors.ndim != 3 or colors.shape[:2] != (n_cams, n):
        raise ValueError(
            f"colors must be (N, D) or (C, N, D) with N={n}, C={n_cams}; got {tuple(colors.shape)}"
        )
    for name, t in (
        ("means", means),
        ("quats", quats),
        ("scales", scales),
        ("opacities", opacities),
        ("colors", colors),
    ):
        if t.numel() and _finite_sum(t):  # one reduction; a NaN or Inf spoils it
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            per_gaussian = (
                bad.movedim(-2, 0).reshape(n, -1).any(1) if name == "colors" else bad.reshape(n, -1).any(1)
            )
            raise ValueError(
                f"{name} contains NaN or Inf (first at Gaussian {int(per_gaussian.nonzero()[0, 0])}); "
                "the model diverged or its input is corrupt"
            )
    if scales.numel() and _smallest(scales) < 0:
        raise ValueError("scales must be non-negative standard deviations (pass exp(log_scales))")
    return colors


def _visible(radii: Tensor) -> Tensor:
    if radii.device.type == "cpu":
        return torch.from_numpy((radii.numpy() > 0).all(-1))
    return (radii > 0).all(-1)


def _on_cpu_numpy(t: Tensor) -> bool:
    """Small reductions of CPU tensors run in NumPy, on one thread: PyTorch's OpenMP fork and join around
    them stalls for milliseconds when other processes hold the cores."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _finite_sum(t: Tensor) -> bool:
    if _on_cpu_numpy(t):
        return bool(np.isfinite(t.detach().numpy().sum()))
    return bool(torch.isfinite(t.detach().sum()))


def _smallest(t: Tensor) -> float:
    return float(t.detach().numpy().min() if _on_cpu_numpy(t) else t.detach().min())


def _background(
    background: Tensor | float | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The background as a tensor broadcastable to the images' ``shape`` (C, H, W, D)."""
    if background is None:
        return torch.zeros((), dtype=dtype, device=device)
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    n_cams, h, w, d = shape
    if bg.ndim == 0:
        return bg
    if bg.ndim == 1:
        return bg.reshape(1, 1, 1, d)
    if bg.ndim == 2:
        return bg.reshape(n_cams, 1, 1, d)
    if bg.ndim in (3, 4) and tuple(bg.shape[-3:]) == (h, w, d):
        return bg if bg.ndim == 4 else bg[None]
    raise ValueError(
        f"background must be a colour (D,), (C, D) or an image (H, W, D), (C, H, W, D); "
        f"got {tuple(bg.shape)} for images of {(n_cams, h, w, d)}"
    )
