"""A frozen talking head's per-frame work, compiled: the binding frames of the frame's mesh, then every
Gaussian (face and mouth interior alike) placed, activated and shaded in one pass.

Rendering changes only the mesh and the lower face's code from frame to frame. Everything else a Gaussian
needs is fixed once the model is frozen, and is gathered here once: its binding frame's row, its local
mean, rotation and log-scale, its opacity (already through the sigmoid), its colour logits and the part
of the expression colour network's first layer that depends on its own latent. Per frame,
:meth:`FrozenHead.splats` computes the mesh's frames (``binding.face_pose``, in float64: 852 triangles,
the jaw's rigid fit, the quaternions) and then, per Gaussian in float32 and in the operation order of the
PyTorch modules (``binding.place``, ``GaussianSet.splats``, ``ExpressionColour``), its head-frame mean,
quaternion, scale, opacity and colour, written straight into the arrays ``rasterize`` reads, face then
mouth interior. The PyTorch path computes the same (``tests/test_drive_and_eval.py`` holds them to
1e-5); it runs about a hundred small tensor operations where this is one pass on gstalk's threads.

Only for rendering: no gradients, CPU float32 parameters, and no residual networks (``config.residual``,
off by default); :meth:`TalkingHead.forward` falls back to PyTorch otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from ..face.mesh import JAW
from ..splat.threads import for_each_part, split_range


@njit(cache=True, nogil=True)
def _rotmat_to_quat(m: np.ndarray, out: np.ndarray) -> None:
    """``binding.rotmat_to_quat`` of one (3, 3) matrix: Shepperd's method, unit, w ≥ 0."""
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    k, best = 0, trace
    for i in range(3):
        if m[i, i] > best:
            k, best = i + 1, m[i, i]
    if k == 0:
        w, x, y, z = 1 + trace, m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]
    elif k == 1:
        w, x, y, z = m[2, 1] - m[1, 2], 1 + m[0, 0] - m[1, 1] - m[2, 2], m[0, 1] + m[1, 0], m[0, 2] + m[2, 0]
    elif k == 2:
        w, x, y, z = m[0, 2] - m[2, 0], m[0, 1] + m[1, 0], 1 - m[0, 0] + m[1, 1] - m[2, 2], m[1, 2] + m[2, 1]
    else:
        w, x, y, z = m[1, 0] - m[0, 1], m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], 1 - m[0, 0] - m[1, 1] + m[2, 2]
    norm = max(np.sqrt(w * w + x * x + y * y + z * z), 1e-12)
    if w < 0:
        norm = -norm
    out[0], out[1], out[2], out[3] = w / norm, x / norm, y / norm, z / norm


@njit(cache=True, nogil=True)
def _jaw_fit(mesh: np.ndarray, canonical: np.ndarray, jaw: np.ndarray, rot: np.ndarray, origin: np.ndarray):
    """``binding.rigid_fit`` of the canonical jaw points onto the mesh's (Kabsch) into ``rot``, ``origin``."""
    src, dst = canonical[jaw], mesh[jaw]
    mu_s, mu_d = src.sum(0) / len(jaw), dst.sum(0) / len(jaw)
    cov = np.ascontiguousarray((src - mu_s).T) @ (dst - mu_d)
    u, _, vt = np.linalg.svd(cov)
    v, ut = np.ascontiguousarray(vt.T), np.ascontiguousarray(u.T)
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(v @ ut))
    rot[:] = v @ fix @ ut
    origin[:] = mu_d - rot @ mu_s


@njit(cache=True, nogil=True)
def face_frames(
    mesh: np.ndarray,
    canonical: np.ndarray,
    triangles: np.ndarray,
    canonical_sizes: np.ndarray,
    jaw: np.ndarray,
    rot: np.ndarray,
    origin: np.ndarray,
    scale: np.ndarray,
    quat: np.ndarray,
) -> None:
    """``binding.face_pose`` of ``mesh`` (V, 3) into ``rot`` (F + 2, 3, 3), ``origin`` (F + 2, 3),
    ``scale`` (F + 2,) and ``quat`` (F + 2, 4), float64: row 0 the skull, 1 the jaw, 2 + f triangle f
    (axes: the first edge, the in-plane normal, the face normal; origin the centroid; scale the mean edge
    length over the canonical one)."""
    rot[0] = np.eye(3)
    origin[0] = 0.0
    scale[0] = scale[1] = 1.0
    _jaw_fit(mesh, canonical, jaw, rot[1], origin[1])
    for f in range(triangles.shape[0]):
        a, b, c = triangles[f, 0], triangles[f, 1], triangles[f, 2]
        ax, ay, az = mesh[b, 0] - mesh[a, 0], mesh[b, 1] - mesh[a, 1], mesh[b, 2] - mesh[a, 2]  # v1 - v0
        bx, by, bz = mesh[c, 0] - mesh[a, 0], mesh[c, 1] - mesh[a, 1], mesh[c, 2] - mesh[a, 2]  # v2 - v0
        la = np.sqrt(ax * ax + ay * ay + az * az)
        inv = 1.0 / max(la, 1e-12)
        e0x, e0y, e0z = ax * inv, ay * inv, az * inv
        nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        inv = 1.0 / max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)
        nx, ny, nz = nx * inv, ny * inv, nz * inv
        e1x, e1y, e1z = ny * e0z - nz * e0y, nz * e0x - nx * e0z, nx * e0y - ny * e0x
        r = rot[2 + f]
        r[0, 0], r[0, 1], r[0, 2] = e0x, e1x, nx
        r[1, 0], r[1, 1], r[1, 2] = e0y, e1y, ny
        r[2, 0], r[2, 1], r[2, 2] = e0z, e1z, nz
        for k in range(3):
            origin[2 + f, k] = (mesh[a, k] + mesh[b, k] + mesh[c, k]) / 3
        cx, cy, cz = mesh[c, 0] - mesh[b, 0], mesh[c, 1] - mesh[b, 1], mesh[c, 2] - mesh[b, 2]  # v2 - v1
        lb, lc = np.sqrt(bx * bx + by * by + bz * bz), np.sqrt(cx * cx + cy * cy + cz * cz)
        scale[2 + f] = (la + lc + lb) / 3 / canonical_sizes[f]
    for f in range(rot.shape[0]):
        _rotmat_to_quat(rot[f], quat[f])


#: Gaussians shaded together: the colour network runs across them, one SIMD lane per Gaussian
BLOCK = 256


@njit(cache=True, nogil=True)
def place_and_shade(
    lo: int,
    hi: int,
    index: np.ndarray,
    local_means: np.ndarray,
    local_quats: np.ndarray,
    local_log_scales: np.ndarray,
    color_logits: np.ndarray,
    latent: np.ndarray,
    code_part: np.ndarray,
    w_out: np.ndarray,
    b_out: np.ndarray,
    rot: np.ndarray,
    origin: np.ndarray,
    scale: np.ndarray,
    quat: np.ndarray,
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    colors: np.ndarray,
) -> None:
    """Gaussians ``lo:hi``: head-frame means, quaternions, scales (``binding.place`` then ``exp``) and
    colours: the sigmoid of the colour logits plus, when ``latent`` has hidden units, the expression
    colour network, ReLU(latent + code_part) @ w_outᵀ + b_out (summed over the hidden units in order, a
    lane per Gaussian). ``latent``: (⌈N / BLOCK⌉, H, BLOCK), block by block so that each block's is one
    contiguous read (see :func:`blocked`). All float32."""
    acc = np.empty((3, BLOCK), np.float32)
    for b0 in range(lo, hi, BLOCK):  # lo is a multiple of BLOCK
        b1 = min(b0 + BLOCK, hi)
        acc[:] = 0.0
        block = latent[b0 // BLOCK]
        for h in range(latent.shape[1]):
            row, cp, w0, w1, w2 = block[h], code_part[h], w_out[0, h], w_out[1, h], w_out[2, h]
            for k in range(b1 - b0):
                v = max(row[k] + cp, np.float32(0.0))
                acc[0, k] += v * w0
                acc[1, k] += v * w1
                acc[2, k] += v * w2
        for g in range(b0, b1):
            for j in range(3):
                logit = color_logits[g, j]
                if latent.shape[1]:
                    logit = logit + (acc[j, g - b0] + b_out[j])
                colors[g, j] = np.float32(1.0) / (np.float32(1.0) + np.exp(-logit))
    for g in range(lo, hi):
        f = index[g]
        s = scale[f]
        m0, m1, m2 = local_means[g, 0], local_means[g, 1], local_means[g, 2]
        for r in range(3):
            turned = rot[f, r, 0] * m0 + rot[f, r, 1] * m1 + rot[f, r, 2] * m2
            means[g, r] = s * turned + origin[f, r]
        aw, ax, ay, az = quat[f, 0], quat[f, 1], quat[f, 2], quat[f, 3]
        bw, bx, by, bz = local_quats[g, 0], local_quats[g, 1], local_quats[g, 2], local_quats[g, 3]
        quats[g, 0] = aw * bw - ax * bx - ay * by - az * bz
        quats[g, 1] = aw * bx + ax * bw + ay * bz - az * by
        quats[g, 2] = aw * by - ax * bz + ay * bw + az * bx
        quats[g, 3] = aw * bz + ax * by - ay * bx + az * bw
        log_s = np.log(s)
        for j in range(3):
            scales[g, j] = np.exp(local_log_scales[g, j] + log_s)


def blocked(latent: np.ndarray) -> np.ndarray:
    """(N, H) → (⌈N / BLOCK⌉, H, BLOCK), zero-padded: Gaussian ``g``'s unit ``h`` at
    ``[g // BLOCK, h, g % BLOCK]``."""
    n, h = latent.shape
    padded = np.zeros((-(-n // BLOCK) * BLOCK, h), np.float32)
    padded[:n] = latent
    return np.ascontiguousarray(padded.reshape(-1, BLOCK, h).transpose(0, 2, 1))


def _numpy32(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


class FrozenHead:
    """What :meth:`TalkingHead.freeze` keeps for compiled rendering (see the module docstring).

    ``model``: a :class:`TalkingHead` on the CPU in float32, not residual-driven. Raises ``ValueError``
    otherwise (``TalkingHead.freeze`` checks first and keeps the PyTorch path)."""

    def __init__(self, model) -> None:
        if not self.supports(model):
            raise ValueError("compiled rendering needs a float32 CPU model without residual networks")
        sets = (model.head, model.mouth)
        self.n_head, self.n_mouth = len(model.head), len(model.mouth)
        self.mesh_driven = model.config.mesh_driven
        self.index = np.concatenate([s.frame_index().cpu().numpy() for s in sets]).astype(np.int64)
        cat = {k: torch.cat([s.params[k] for s in sets]) for k in ("means", "quats", "log_scales")}
        self.local = tuple(_numpy32(cat[k]) for k in ("means", "quats", "log_scales"))
        self.opacities = torch.sigmoid(torch.cat([s.params["opacity_logits"] for s in sets])).detach().clone()
        self.color_logits = _numpy32(torch.cat([s.params["color_logits"] for s in sets]))
        self.groups = torch.cat([torch.zeros(self.n_head, dtype=torch.int32),
                                 torch.ones(self.n_mouth, dtype=torch.int32)])  # fmt: skip
        self.canonical = model.canonical_mesh.double().cpu().numpy()
        self.triangles = model.triangles.cpu().numpy().astype(np.int64)
        self.canonical_sizes = model.canonical_sizes.double().cpu().numpy()
        self.jaw = np.asarray(JAW, np.int64)
        self.colour = model.colour if model.config.expression_colour else None
        if self.colour is not None:
            first, last = self.colour.net[0], self.colour.net[-1]
            d = model.head.embedding.shape[1]
            embeddings = torch.cat([s.embedding for s in sets])
            self.latent = blocked(_numpy32(self.colour.latent_part(embeddings)))
            self.w_code = first.weight[:, d:].detach().clone()
            self.w_out, self.b_out = _numpy32(last.weight), _numpy32(last.bias)
        else:
            self.latent = np.zeros((-(-len(self.index) // BLOCK), 0, BLOCK), np.float32)
            self.w_out, self.b_out = np.zeros((3, 0), np.float32), np.zeros(3, np.float32)
        self._canonical_pose = self._frames(self.canonical)

    @staticmethod
    def supports(model) -> bool:
        """Whether ``model`` can render through this path."""
        params = [*model.head.params.values(), *model.mouth.params.values(), *model.colour.parameters()]
        on_cpu = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
        return on_cpu and not model.config.residual

    def _frames(self, mesh: np.ndarray) -> tuple[np.ndarray, ...]:
        """The binding frames of ``mesh`` (V, 3), as float32 arrays (rot, origin, scale, quat)."""
        n = len(self.triangles) + 2
        rot, origin, scale, quat = np.empty((n, 3, 3)), np.empty((n, 3)), np.empty(n), np.empty((n, 4))
        face_frames(mesh, self.canonical, self.triangles, self.canonical_sizes, self.jaw,
                    rot, origin, scale, quat)  # fmt: skip
        return tuple(a.astype(np.float32) for a in (rot, origin, scale, quat))

    def splats(self, mesh: Tensor | None, code: Tensor | None) -> tuple[tuple[Tensor, ...], Tensor]:
        """Every Gaussian of the frame of ``mesh`` (N_MESH, 3; None: the canonical face) and the lower
        face's ``code`` (K,; None: zeros): ``(means, quats, scales, opacities, colors)`` as (N, ·)
        float32 tensors, face Gaussians first, and the (N,) int32 groups (0 face, 1 mouth interior)."""
        if mesh is None or not self.mesh_driven:
            pose = self._canonical_pose
        else:
            pose = self._frames(mesh[: len(self.canonical)].detach().double().cpu().numpy())
        if self.colour is not None:
            k = self.w_code.shape[1]
            code_t = torch.zeros(k) if code is None else code.detach().float().cpu()
            code_part = _numpy32(code_t @ self.w_code.T)
        else:
            code_part = np.zeros(0, np.float32)
        n = len(self.index)
        means, quats = np.empty((n, 3), np.float32), np.empty((n, 4), np.float32)
        scales, colors = np.empty((n, 3), np.float32), np.empty((n, 3), np.float32)
        args = (self.index, *self.local, self.color_logits, self.latent, code_part, self.w_out, self.b_out,
                *pose, means, quats, scales, colors)  # fmt: skip
        parts = split_range(-(-n // BLOCK), min_per_part=16)  # in whole blocks
        for_each_part(lambda part: place_and_shade(part[0] * BLOCK, min(part[1] * BLOCK, n), *args), parts)
        tensors = tuple(torch.from_numpy(a) for a in (means, quats, scales))
        return (*tensors, self.opacities, torch.from_numpy(colors)), self.groups
