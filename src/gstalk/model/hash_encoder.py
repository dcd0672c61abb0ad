"""Tri-plane multi-resolution hash encoding in pure PyTorch (CPU and CUDA alike).

A 3D point is projected onto the xy, yz and xz planes; on each plane a multi-resolution 2D hash grid
(Instant-NGP style, as in ER-NeRF's tri-plane encoder) is bilinearly interpolated, and the three planes'
features are concatenated. Lookups are ``index_select`` gathers from one flat table, about twice as fast as
``nn.Embedding`` on CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_PRIME = 2654435761


class TriplaneHashEncoder(nn.Module):
    """Encode (N, 3) points in [0, 1]³ to (N, 3 · levels · features)."""

    def __init__(
        self,
        levels: int = 12,
        features: int = 2,
        log2_table: int = 14,
        base_resolution: int = 16,
        max_resolution: int = 512,
    ) -> None:
        super().__init__()
        self.levels, self.features = levels, features
        self.table_size = 2**log2_table
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        res = [math.floor(base_resolution * growth**i) for i in range(levels)]
        self.register_buffer("resolutions", torch.tensor(res, dtype=torch.float32), persistent=False)
        # a level whose dense grid fits in the table is indexed densely (no collisions), else hashed
        dense = [(r + 1) ** 2 <= self.table_size for r in res]
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        sizes = [min((r + 1) ** 2, self.table_size) for r in res]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        # one table per plane, uniform(-1e-4, 1e-4) as in Instant-NGP
        self.tables = nn.Parameter(torch.empty(3, offsets[-1], features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return 3 * self.levels * self.features

    def forward(self, x: Tensor) -> Tensor:
        x = x.clamp(0.0, 1.0)
        planes = (x[:, [0, 1]], x[:, [1, 2]], x[:, [0, 2]])
        return torch.cat([self._plane(p, self.tables[k]) for k, p in enumerate(planes)], dim=-1)

    def _plane(self, uv: Tensor, table: Tensor) -> Tensor:
        n = uv.shape[0]
        res = self.resolutions  # (L,)
        pos = uv[:, None, :] * res[None, :, None]  # (N, L, 2)
        cell = torch.floor(pos)
        frac = pos - cell
        cell = cell.long()
        corners = ((0, 0), (1, 0), (0, 1), (1, 1))
        out = torch.zeros(n, self.levels, self.features, dtype=table.dtype, device=table.device)
        r1 = res.long() + 1
        for dx, dy in corners:
            cx, cy = cell[..., 0] + dx, cell[..., 1] + dy  # (N, L)
            dense_idx = cx + cy * r1[None, :]
            hashed = ((cx * 1) ^ (cy * _PRIME)) % self.sizes[None, :]
            idx = torch.where(self.dense[None, :], dense_idx, hashed) + self.offsets[None, :]
            w = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
            feats = table.index_select(0, idx.reshape(-1)).reshape(n, self.levels, self.features)
            out = out + w[..., None] * feats
        return out.reshape(n, self.levels * self.features)
