"""Densification and pruning as a strategy object outside the training loop (gsplat's idea).

The same rules as gsplat's ``DefaultStrategy`` (3DGS's adaptive density control), on any device:
accumulate the screen-space gradient of each Gaussian's centre; every ``every`` steps clone small Gaussians
with large gradients, split large ones into two smaller, prune nearly transparent or oversized ones, and
periodically reset opacities. On top, GaussianSpeech's compact-avatar rule: a volume-based top-k cap keeps
the ``max_gaussians`` with the largest opacity-weighted volume.

Optimizer state follows the Gaussians: Adam moments are gathered with the same indices (zero for new
ones), so training continues smoothly after every change.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import DensifyConfig
from ..model.gaussians import PER_GAUSSIAN, GaussianSet
from ..splat import RenderOutput, quat_to_rotmat


class DensifyStrategy:
    """Holds the gradient statistics of each Gaussian set; the loop calls :meth:`step_post_backward`."""

    def __init__(
        self,
        config: DensifyConfig,
        sets: dict[str, GaussianSet],
        scene_extent: float,
        iterations: int,
        max_gaussians: int,
    ) -> None:
        """``iterations``: the stage's length (densification stops at ``config.stop_fraction`` of it);
        ``max_gaussians``: the head set's cap (the mouth set's is a tenth of it)."""
        self.config = config
        self.sets = sets
        self.extent = scene_extent
        self.stop = int(iterations * config.stop_fraction)
        self.reset_every = config.reset_every if iterations >= config.reset_min_iterations else 0
        self.caps = {name: max_gaussians if name == "head" else max(64, max_gaussians // 10) for name in sets}
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.grad = {k: torch.zeros(len(s), device=s.means.device) for k, s in self.sets.items()}
        self.count = {k: torch.zeros(len(s), device=s.means.device) for k, s in self.sets.items()}

    @torch.no_grad()
    def step_post_backward(
        self, step: int, renders: dict[str, RenderOutput], optimizer: torch.optim.Optimizer
    ) -> bool:
        """Accumulate statistics from this step's renders; densify/prune when due. True if sets changed."""
        c = self.config
        if step > self.stop:
            return False
        for name, out in renders.items():
            g = out.means2d.grad
            if g is None:
                continue
            width, height = out.image.shape[2], out.image.shape[1]
            g = g[0].clone()
            g[:, 0] *= width / 2
            g[:, 1] *= height / 2
            vis = out.visible[0]
            self.grad[name][vis] += g[vis].norm(dim=-1)
            self.count[name][vis] += 1
        changed = False
        if step >= c.start and step % c.every == 0:
            for name, s in self.sets.items():
                self._refine(name, s, optimizer, grow=step < self.stop)
            self._reset_stats()
            changed = True
        if self.reset_every and step > 0 and step % self.reset_every == 0:
            for s in self.sets.values():
                p = s.params["opacity_logits"]
                p.data.clamp_(max=torch.logit(torch.tensor(0.01)).item())
                _reset_state(optimizer, p)
        return changed

    def _refine(self, name: str, s: GaussianSet, optimizer, grow: bool) -> None:
        c = self.config
        p = s.params
        n = len(s)
        scale = torch.exp(p["log_scales"]).max(-1).values
        avg = self.grad[name] / self.count[name].clamp(min=1)
        src = torch.arange(n, device=scale.device)
        new = {k: p[k].detach() for k in PER_GAUSSIAN}
        if grow:
            big_grad = avg > c.grad_threshold
            clone = big_grad & (scale <= c.scale_threshold * self.extent)
            split = big_grad & (scale > c.scale_threshold * self.extent)
            room = self.caps[name] * 2 - n
            clone_idx = clone.nonzero().squeeze(1)[: max(room, 0)]
            split_idx = split.nonzero().squeeze(1)[: max(room - clone_idx.numel(), 0) // 2]
            if split_idx.numel():
                # two samples from each split Gaussian, 1.6× smaller; the original goes
                rot = quat_to_rotmat(p["quats"][split_idx])
                std = torch.exp(p["log_scales"][split_idx])
                offsets = [torch.einsum("nij,nj->ni", rot, torch.randn_like(std) * std) for _ in range(2)]
                keep = torch.ones(n, dtype=torch.bool, device=scale.device)
                keep[split_idx] = False
                src = torch.cat([src[keep], clone_idx, split_idx, split_idx])
                new = {k: v[src] for k, v in new.items()}
                k0 = int(keep.sum()) + clone_idx.numel()
                new["means"][k0:] += torch.cat(offsets)
                new["log_scales"][k0:] -= torch.log(torch.tensor(1.6))
            elif clone_idx.numel():
                src = torch.cat([src, clone_idx])
                new = {k: v[src] for k, v in new.items()}
        opacity = torch.sigmoid(new["opacity_logits"])
        scales = torch.exp(new["log_scales"])
        alive = (opacity > c.prune_opacity) & (scales.max(-1).values < c.prune_scale * self.extent)
        alive_idx = alive.nonzero().squeeze(1)
        cap = self.caps[name]
        if alive_idx.numel() > cap:  # GaussianSpeech: keep the top-k by opacity-weighted volume
            score = opacity[alive_idx] * scales[alive_idx].prod(-1)
            alive_idx = alive_idx[torch.topk(score, cap).indices.sort().values]
        src = src[alive_idx]
        new = {k: v[alive_idx] for k, v in new.items()}
        _swap(optimizer, s, new, src)


def _swap(optimizer, s: GaussianSet, new: dict[str, Tensor], src: Tensor) -> None:
    """Replace the set's tensors and carry each parameter's Adam state along ``src`` (the old row each new
    row came from); the second and later copies of a row start with zero moments."""
    old = {k: s.params[k] for k in PER_GAUSSIAN}
    s.replace(new, s.buffers_at(src))
    order = torch.argsort(src, stable=True)
    repeat = torch.zeros_like(src, dtype=torch.bool)
    repeat[1:] = src[order][1:] == src[order][:-1]
    fresh = torch.empty_like(repeat)
    fresh[order] = repeat
    for k in PER_GAUSSIAN:
        _move_state(optimizer, old[k], s.params[k], src, fresh)


def _move_state(
    optimizer, old: torch.nn.Parameter, new: torch.nn.Parameter, src: Tensor, fresh: Tensor
) -> None:
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state:
                    for key in ("exp_avg", "exp_avg_sq"):
                        if key in state:
                            moved = state[key][src].clone()
                            moved[fresh] = 0
                            state[key] = moved
                    optimizer.state[new] = state


def _reset_state(optimizer, p: torch.nn.Parameter) -> None:
    state = optimizer.state.get(p)
    if state:
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].zero_()


def scene_extent(model) -> float:
    """Radius of the head's Gaussians on the canonical face around their centre (metres)."""
    with torch.no_grad():
        means = model.canonical_means(model.head)
    return float((means - means.mean(0)).norm(dim=-1).max())
