"""Densification and pruning as a strategy object outside the training loop (gsplat's idea).

The same rules as gsplat's ``DefaultStrategy`` (3DGS's adaptive density control), on any device:
accumulate the screen-space gradient of each Gaussian's centre; every ``every`` steps clone small Gaussians
with large gradients, split large ones into two smaller, prune nearly transparent or oversized ones, and
periodically reset opacities. On top, a cap of ``max_gaussians``.

Two choices decide where the detail goes (``DensifyConfig``):

- ``score``: ``grad``, the norm of the summed gradient (3DGS), or ``absgrad``, the norm of the per-axis
  sums of each pixel's |gradient| (AbsGS, Ye et al. 2024; gsplat's ``absgrad``). Where a Gaussian is too
  large for the detail under it (an eyelid crease, a lip line, a brow), its pixels pull its centre in
  opposite directions and the summed gradient cancels, so 3DGS's rule leaves exactly the high-frequency
  regions blurred; the absolute sum does not cancel. Candidates grow in the order of their score.
- ``cap_rank``: when the set exceeds its cap, keep the Gaussians with the largest ``volume`` (opacity-
  weighted; GaussianSpeech's compact-avatar rule), or the largest ``weight``: the blending weight each
  contributed to the frames since the last round (LightGaussian's importance), a copy or half of a split
  taking half its parent's. The volume rule removes the smallest Gaussians first, which are the ones the
  detail needs; the weight rule removes those whose loss changes the frames least (hidden or faint).

The statistics come from ``rasterize(stats=...)`` (the CPU backends); without them (gsplat) ``grad`` and
``volume`` are used.

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

    @property
    def wants_stats(self) -> bool:
        """Whether the renders should carry ``rasterize``'s statistics (``render_portrait(stats=True)``)."""
        return self.config.score == "absgrad" or self.config.cap_rank == "weight"

    def _reset_stats(self) -> None:
        zeros = {k: (len(s), s.means.device) for k, s in self.sets.items()}
        self.grad = {k: torch.zeros(n, device=d) for k, (n, d) in zeros.items()}
        self.count = {k: torch.zeros(n, device=d) for k, (n, d) in zeros.items()}
        self.absgrad = {k: torch.zeros(n, device=d) for k, (n, d) in zeros.items()}
        self.weight = {k: torch.zeros(n, device=d) for k, (n, d) in zeros.items()}
        self.has_stats = {k: False for k in zeros}

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
            if out.stats and "absgrad" in out.stats:
                a = out.stats["absgrad"][0].to(g)
                scale = torch.tensor([width / 2, height / 2], dtype=a.dtype, device=a.device)
                self.absgrad[name][vis] += (a[vis] * scale).norm(dim=-1)
                self.weight[name] += out.stats["weight"][0].to(self.weight[name])
                self.has_stats[name] = True
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
        stats = self.has_stats[name]
        if c.score == "absgrad" and stats:
            avg, threshold = self.absgrad[name] / self.count[name].clamp(min=1), c.absgrad_threshold
        else:
            avg, threshold = self.grad[name] / self.count[name].clamp(min=1), c.grad_threshold
        src = torch.arange(n, device=scale.device)
        new = {k: p[k].detach() for k in PER_GAUSSIAN}
        weight = self.weight[name].clone()
        if grow:
            big_grad = avg > threshold
            room = max(self.caps[name] * 2 - n, 0)
            # the highest scores first: a clone adds one Gaussian, a split two for the one it removes
            ranked = big_grad.nonzero().squeeze(1)
            ranked = ranked[torch.argsort(avg[ranked], descending=True, stable=True)][:room]
            small = scale[ranked] <= c.scale_threshold * self.extent
            clone_idx, split_idx = ranked[small].sort().values, ranked[~small].sort().values
            weight[clone_idx] *= 0.5  # the copy takes half the parent's weight (below)
            if split_idx.numel():
                # two samples from each split Gaussian, 1.6× smaller; the original goes
                rot = quat_to_rotmat(p["quats"][split_idx])
                std = torch.exp(p["log_scales"][split_idx])
                offsets = [torch.einsum("nij,nj->ni", rot, torch.randn_like(std) * std) for _ in range(2)]
                keep = torch.ones(n, dtype=torch.bool, device=scale.device)
                keep[split_idx] = False
                weight[split_idx] *= 0.5  # each half of a split takes half the parent's weight
                src = torch.cat([src[keep], clone_idx, split_idx, split_idx])
                new = {k: v[src] for k, v in new.items()}
                k0 = int(keep.sum()) + clone_idx.numel()
                new["means"][k0:] += torch.cat(offsets)
                new["log_scales"][k0:] -= torch.log(torch.tensor(1.6))
            elif clone_idx.numel():
                src = torch.cat([src, clone_idx])
                new = {k: v[src] for k, v in new.items()}
        weight = weight[src]
        opacity = torch.sigmoid(new["opacity_logits"])
        scales = torch.exp(new["log_scales"])
        alive = (opacity > c.prune_opacity) & (scales.max(-1).values < c.prune_scale * self.extent)
        alive_idx = alive.nonzero().squeeze(1)
        cap = self.caps[name]
        if alive_idx.numel() > cap:  # keep the top-k by contribution, or by opacity-weighted volume
            if c.cap_rank == "weight" and stats:
                score = weight[alive_idx]
            else:
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
