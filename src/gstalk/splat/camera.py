"""Pinhole cameras in the OpenCV convention (x right, y down, z forward).

A :class:`Camera` holds a batch of C views that share one image size. Pixel ``(row i, col j)`` has
its centre at ``(u, v) = (j + 0.5, i + 0.5)``; a camera-space point ``(x, y, z)`` projects to
``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Camera:
    """C pinhole views of one image size.

    world_to_cam: (C, 4, 4) rigid transforms from world to camera coordinates.
    intrinsics: (C, 4) as ``fx, fy, cx, cy`` in pixels.
    """

    world_to_cam: Tensor
    intrinsics: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        w2c, k = self.world_to_cam, self.intrinsics
        if w2c.ndim == 2:
            object.__setattr__(self, "world_to_cam", w2c[None])
        if k.ndim == 1:
            object.__setattr__(self, "intrinsics", k[None])
        if self.world_to_cam.shape[1:] != (4, 4):
            raise ValueError(f"world_to_cam must be (C, 4, 4), got {tuple(self.world_to_cam.shape)}")
        if self.intrinsics.shape[1:] != (4,):
            raise ValueError(f"intrinsics must be (C, 4) fx, fy, cx, cy; got {tuple(self.intrinsics.shape)}")
        if self.world_to_cam.shape[0] != self.intrinsics.shape[0]:
            raise ValueError("world_to_cam and intrinsics must hold the same number of cameras")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.world_to_cam.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Camera:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Camera(self.world_to_cam[index], self.intrinsics[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.world_to_cam.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        return Camera(
            self.world_to_cam.to(device=device, dtype=dtype),
            self.intrinsics.to(device=device, dtype=dtype),
            self.width,
            self.height,
        )

    def K(self) -> Tensor:
        """(C, 3, 3) intrinsic matrices."""
        fx, fy, cx, cy = self.intrinsics.unbind(-1)
        zero, one = torch.zeros_like(fx), torch.ones_like(fx)
        rows = [
            torch.stack([fx, zero, cx], -1),
            torch.stack([zero, fy, cy], -1),
            torch.stack([zero, zero, one], -1),
        ]
        return torch.stack(rows, -2)

    def resized(self, width: int, height: int) -> Camera:
        """The same views at another image size (intrinsics scaled, pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        scale = self.intrinsics.new_tensor([sx, sy, sx, sy])
        return Camera(self.world_to_cam, self.intrinsics * scale, width, height)

    @staticmethod
    def cat(cameras: list[Camera]) -> Camera:
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cameras to batch must share one image size, got {sorted(sizes)}")
        return Camera(
            torch.cat([c.world_to_cam for c in cameras]),
            torch.cat([c.intrinsics for c in cameras]),
            cameras[0].width,
            cameras[0].height,
        )


def intrinsics_from_fov(fov_x_degrees: float, width: int, height: int) -> Tensor:
    """``fx, fy, cx, cy`` for square pixels and the principal point at the image centre."""
    fx = 0.5 * width / math.tan(math.radians(fov_x_degrees) / 2)
    return torch.tensor([fx, fx, width / 2, height / 2], dtype=torch.float32)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World-to-camera (4, 4) for a camera at ``eye`` looking at ``target``, OpenCV axes.

    ``up`` is the world direction that should appear up in the image (default -y, since y is down).
    """
    eye, target = torch.as_tensor(eye, dtype=torch.float32), torch.as_tensor(target, dtype=eye.dtype)
    up = (
        torch.tensor([0.0, -1.0, 0.0], dtype=eye.dtype)
        if up is None
        else torch.as_tensor(up, dtype=eye.dtype)
    )
    z = torch.nn.functional.normalize(target - eye, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(-up, z), dim=0)
    y = torch.linalg.cross(z, x)
    rot = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=eye.dtype)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ eye
    return w2c
