"""Cameras and the differentiable Gaussian rasterizer: one API, a pure-PyTorch and a gsplat backend."""

from .camera import Camera, intrinsics_from_fov, look_at
from .projection import covariance_3d, project_gaussians, quat_to_rotmat
from .rasterize import RenderOutput, rasterize, resolve_backend

__all__ = [
    "Camera",
    "RenderOutput",
    "covariance_3d",
    "intrinsics_from_fov",
    "look_at",
    "project_gaussians",
    "quat_to_rotmat",
    "rasterize",
    "resolve_backend",
]
