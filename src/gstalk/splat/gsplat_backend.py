"""gsplat (nerfstudio's CUDA rasterizer) behind gstalk's rasterize() API.

gsplat is imported only inside :func:`rasterize_gsplat`, which is only called for CUDA tensors: on a
machine without a GPU it is never imported, so it can never try to JIT-compile its kernels there.

Conventions already match the torch backend: pixel centres at +0.5, the 0.3 px² low-pass (``eps2d``),
the 1/255 alpha cut-off and opacity-aware boxes, z-depth. One difference is gsplat's own: it clamps a
Gaussian's alpha at 0.999 where the reference rasterizer (and our torch backend) clamps at 0.99.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .camera import Camera
from .projection import FAR_PLANE, LOW_PASS, NEAR_PLANE


def gsplat_available() -> bool:
    """True when CUDA is usable and gsplat is installed (checked without importing gsplat)."""
    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    cameras: Camera,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns colour (C,H,W,D), alpha (C,H,W,1), expected depth (C,H,W,1), means2d (C,N,2), radii (C,N,2)."""
    if means.device.type != "cuda":
        raise RuntimeError("the gsplat backend needs CUDA tensors; use backend='torch' on CPU")
    from gsplat import rasterization

    render, alpha, meta = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=cameras.world_to_cam,
        Ks=cameras.K(),
        width=cameras.width,
        height=cameras.height,
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=LOW_PASS,
        packed=False,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    means2d = meta["means2d"]
    radii = meta["radii"]
    if radii.ndim == means2d.ndim - 1:  # gsplat < 1.5 returns one radius per Gaussian
        radii = radii[..., None].expand(*radii.shape, 2)
    return render[..., :-1], alpha, render[..., -1:], means2d, radii.to(torch.int32)
