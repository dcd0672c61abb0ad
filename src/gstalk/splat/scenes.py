"""Synthetic Gaussian scenes for tests and benchmarks: no files, fully determined by a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .camera import Camera, intrinsics_from_fov, look_at
from .projection import quat_multiply


@dataclass
class GaussianScene:
    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GaussianScene:
        return GaussianScene(*(t.to(device=device, dtype=dtype) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.means, self.quats, self.scales, self.opacities, self.colors


def head_shell(
    n: int, seed: int = 0, radii: tuple[float, float, float] = (0.08, 0.11, 0.09)
) -> GaussianScene:
    """N flat Gaussians tangent to a head-sized ellipsoid (metres), covering its surface about 3 times.

    This is the shape a trained 3DGS head takes: surface splats whose size shrinks as N grows, so
    benchmarks at different N render a comparable, fully covered image.
    """
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    axes = torch.tensor(radii)
    means = direction * axes
    normal = torch.nn.functional.normalize(direction / axes, dim=1)
    # rotation taking z to the surface normal, with a random twist about it
    z = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
    half = torch.nn.functional.normalize(z + normal + 1e-9, dim=1)
    quats = torch.cat([(z * half).sum(1, keepdim=True), torch.linalg.cross(z, half)], 1)
    twist = torch.rand(n, generator=g) * math.pi
    twist_q = torch.stack([torch.cos(twist / 2), *([torch.zeros(n)] * 2), torch.sin(twist / 2)], 1)
    quats = quat_multiply(quats, twist_q)
    area = (
        4
        * math.pi
        * (((axes[0] * axes[1]) ** 1.6 + (axes[0] * axes[2]) ** 1.6 + (axes[1] * axes[2]) ** 1.6) / 3)
        ** (1 / 1.6)
    )
    sigma = math.sqrt(3 * float(area) / (n * math.pi)) / 2
    jitter = torch.exp(0.25 * torch.randn(n, 2, generator=g))
    scales = torch.cat([sigma * jitter, torch.full((n, 1), sigma * 0.05)], 1)
    opacities = 0.35 + 0.6 * torch.rand(n, generator=g)
    colors = 0.5 + 0.4 * torch.tanh(2 * means / axes) * torch.tensor([1.0, -0.6, 0.3])
    colors = (colors + 0.05 * torch.randn(n, 3, generator=g)).clamp(0, 1)
    return GaussianScene(means, quats, scales, opacities, colors)


def orbit_cameras(
    n_views: int, size: int, distance: float = 0.5, fov_x_degrees: float = 30.0, max_yaw_degrees: float = 20.0
) -> Camera:
    """``n_views`` cameras on a horizontal arc in front of the head (at -z), looking at the origin."""
    yaws = torch.linspace(-max_yaw_degrees, max_yaw_degrees, n_views) if n_views > 1 else torch.zeros(1)
    mats = []
    for yaw in torch.deg2rad(yaws):
        eye = torch.stack([distance * torch.sin(yaw), torch.tensor(0.0), -distance * torch.cos(yaw)])
        mats.append(look_at(eye, torch.zeros(3)))
    k = intrinsics_from_fov(fov_x_degrees, size, size)
    return Camera(torch.stack(mats), k.expand(n_views, 4).clone(), size, size)
