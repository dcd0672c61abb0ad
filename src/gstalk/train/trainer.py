"""One training loop driven by a list of stage configs: static → motion → fusion.

The run folder holds ``config.json`` (the TrainConfig), ``log.csv`` and ``loss.png`` (curves),
``checkpoints/`` (versioned states for ``--resume``, crash-safe: see ``train.checkpoint``) and, when
training ends, ``model/`` (the final weights that render and evaluate read).
"""

from __future__ import annotations

import csv
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..config import (
    LearningRates,
    StageConfig,
    TrainConfig,
    config_to_dict,
    resolve_train,
    save_config,
    stages,
)
from ..data.check import check_dataset
from ..data.dataset import load_dataset
from ..data.frames import FrameData
from ..device import pick_device
from ..errors import GstalkError
from ..fileio import strict_json, write_json_atomic
from ..model.checkpoint import load_model, save_model
from ..model.init import init_talking_head
from ..model.talking_head import Drive, TalkingHead, render_portrait
from ..outputs import claim_output
from ..regions import Region
from ..splat import RenderOutput
from .audio_motion import fit_audio_motion, target_coefficients
from .checkpoint import latest_checkpoint, load_training_state, save_training_checkpoint
from .losses import SSIM_RADIUS, dssim, mask_box, masked, mouth_mask_loss, psnr
from .strategy import DensifyStrategy, scene_extent

LOG_FIELDS = [
    "stage", "step", "loss", "l1", "dssim", "lpips", "mouth", "residual", "psnr", "gaussians", "seconds",
]  # fmt: skip


class Diverged(GstalkError):
    pass


def build_optimizer(
    model: TalkingHead, stage: StageConfig, extent: float, lr: LearningRates
) -> torch.optim.Adam:
    """Adam with a learning rate per parameter kind, scaled by the stage's ``lr_scale``."""
    s = stage.lr_scale
    groups: list[dict[str, Any]] = []
    if "gaussians" in stage.train:
        for gs in (model.head, model.mouth):
            p = gs.params
            groups += [
                {"params": [p["means"]], "lr": lr.means * max(extent, 1e-3) * s, "name": "means"},
                {"params": [p["log_scales"]], "lr": lr.log_scales * s, "name": "log_scales"},
                {"params": [p["quats"]], "lr": lr.quats * s, "name": "quats"},
                {"params": [p["opacity_logits"]], "lr": lr.opacity * s, "name": "opacity"},
                {"params": [p["color_logits"]], "lr": lr.colors * s, "name": "colors"},
                {"params": [p["embedding"]], "lr": lr.embedding * s, "name": "embedding"},
            ]
    elif "colors" in stage.train:
        groups.append({"params": model.color_parameters(), "lr": lr.colors_only * s, "name": "colors"})
    if "networks" in stage.train:
        groups += [
            {"params": [model.encoder.tables], "lr": lr.hash * s, "name": "hash"},
            {
                "params": [p for p in model.network_parameters() if p is not model.encoder.tables],
                "lr": lr.networks * s,
                "name": "networks",
            },
        ]
    return torch.optim.Adam(groups, eps=1e-15)


StepHook = Callable[["Trainer", StageConfig, int], None]


class Trainer:
    """Runs the stages of a TrainConfig over one model. ``on_step(trainer, stage, step)`` is called after
    every step (progress reporting, or :meth:`request_stop`)."""

    def __init__(self, config: TrainConfig, on_step: StepHook | None = None) -> None:
        self.config = resolve_train(config)
        self.out = Path(config.out)
        self.device = pick_device(config.device)
        check_dataset(config.dataset)  # every problem at once, before minutes of training
        self.ds = load_dataset(config.dataset)
        if len(self.ds.train_ids) < 10:
            raise GstalkError(
                f"{config.dataset} has only {len(self.ds.train_ids)} usable training frames",
                "prepare a longer clip (a few minutes trains best)",
            )
        m = self.config.model
        self.data = FrameData(self.ds, self.config.size, self.device, m.context_past, m.context_future)
        self.stages = stages(self.config)
        self.lpips = None
        if self.config.lpips_weights is not None:
            from ..model.lpips import LPIPS

            self.lpips = LPIPS.from_folder(self.config.lpips_weights).to(self.device)
        self._stop = False
        self.on_step = on_step
        self.model: TalkingHead | None = None

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and stop (what Ctrl-C does)."""
        self._stop = True

    def init_model(self) -> TalkingHead:
        """A new model on the dataset's tracked face (the start of a run); becomes ``self.model``."""
        self.model = init_talking_head(
            self.ds, self.config.max_gaussians, config=self.config.model, seed=self.config.seed
        ).to(self.device)
        return self.model

    def optimizer(self, stage: StageConfig) -> torch.optim.Adam:
        """The optimizer of ``stage`` over the current model's parameters."""
        return build_optimizer(self.model, stage, scene_extent(self.model), self.config.lr)

    # --- the run ----------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train (or resume) the run, holding its folder's lock throughout."""
        with claim_output(self.out, [self.config.dataset], what="run"):
            return self._run()

    def _run(self) -> Path:
        start_stage, start_step = 0, 0
        latest = latest_checkpoint(self.out)
        if self.config.resume and latest is not None:
            model, meta = load_model(latest, self.device)
            start_stage, start_step = meta["stage_index"], meta["step"]
            if start_stage >= len(self.stages):
                self._say("every stage had finished; writing the final model")
            else:
                self._say(
                    f"resuming stage {self.stages[start_stage].name} at step {start_step} ({latest.name})"
                )
        else:
            if latest is not None or (self.out / "model").exists():
                raise GstalkError(
                    f"{self.out} already holds a training run",
                    "pass --resume to continue it, or choose another --out",
                )
            if self.config.resume:
                self._say(f"no checkpoint in {self.out} yet: starting from the beginning")
            model = self.init_model()
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.out)
            self.fit_audio_motion()
            save_training_checkpoint(self.out, model, self._state(0, 0))
        self.model = model
        self.codes = torch.from_numpy(target_coefficients(self.ds, model.basis.cpu())).to(self.device)
        model.basis.to(self.device)
        gen = torch.Generator().manual_seed(self.config.seed)
        previous = signal.signal(signal.SIGINT, self._interrupt)
        try:
            for index in range(start_stage, len(self.stages)):
                first = start_step if index == start_stage else 0
                resume_from = latest if (index == start_stage and start_step > 0) else None
                self._run_stage(index, first, gen, resume_from)
                if not self._stop:  # each finished stage's model, e.g. the static baseline of evaluate
                    save_model(self.out / "stages" / self.stages[index].name, model, self._final_state())
                if self._stop:
                    self._say(
                        f"interrupted: checkpoint saved in {latest_checkpoint(self.out)}; "
                        "continue with the same command and --resume",
                        always=True,
                    )
                    raise KeyboardInterrupt
        finally:
            signal.signal(signal.SIGINT, previous)
        save_model(self.out / "model", model, self._final_state())
        self.plot()
        self._say(f"done: model in {self.out / 'model'}")
        return self.out

    def fit_audio_motion(self) -> dict[str, float]:
        """Stage 0: fit the audio → motion model (no rendering); its held-out figures go to
        ``audio_motion.json`` in the run folder."""
        self._say("audio → motion: fitting the lower face's motion to the speech")
        model = self.model
        model.motion.cpu()
        figures = fit_audio_motion(self.ds, model.basis.cpu(), model.motion, self.config.audio_motion,
                                   progress=self.config.progress)  # fmt: skip
        model.to(self.device)
        write_json_atomic(self.out / "audio_motion.json", strict_json(figures))
        self._say(
            f"audio → motion: held-out lip error {figures['lip_error_mm']:.2f} mm, mouth-gap correlation "
            f"{figures['gap_correlation']:.2f}, in {figures['seconds']:.0f} s"
        )
        return figures

    def _state(self, stage_index: int, step: int) -> dict[str, Any]:
        return {
            "stage_index": stage_index,
            "step": step,
            "dataset": str(Path(self.config.dataset).resolve()),
            "train_size": self.config.size,
            "config": config_to_dict(self.config),
        }

    def _final_state(self) -> dict[str, Any]:
        return self._state(len(self.stages), 0)

    def _interrupt(self, signum, frame) -> None:  # Ctrl-C: finish the step, save, exit cleanly
        self.request_stop()

    def _say(self, text: str, always: bool = False) -> None:
        if self.config.progress:
            tqdm.write(f"gstalk train: {text}")
        elif always:
            print(f"gstalk train: {text}", file=sys.stderr)

    def _run_stage(self, index: int, first_step: int, gen: torch.Generator, resume_from: Path | None) -> None:
        stage = self.stages[index]
        model = self.model
        extent = scene_extent(model)
        optimizer = self.optimizer(stage)
        if resume_from is not None:
            rng = load_training_state(resume_from, optimizer)
            if rng is not None:
                gen.set_state(rng)
        strategy = None
        if stage.densify:
            strategy = DensifyStrategy(
                self.config.densify,
                {"head": model.head, "mouth": model.mouth},
                extent,
                stage.iterations,
                self.config.max_gaussians,
            )
        train_ids = torch.from_numpy(self.ds.train_ids)
        bar = tqdm(
            total=stage.iterations,
            initial=first_step,
            desc=f"{stage.name:<7}",
            unit="it",
            disable=not self.config.progress,
        )
        for step in range(first_step, stage.iterations):
            t0 = time.perf_counter()
            i = int(train_ids[torch.randint(len(train_ids), (1,), generator=gen)])
            broken = self._non_finite_parameter()
            terms, renders = self.step(stage, i, optimizer) if broken is None else ({"loss": math.nan}, {})
            if broken is not None or not math.isfinite(terms["loss"]):
                bar.close()
                what = f"{broken} holds NaN or Inf" if broken else f"loss {terms['loss']}"
                raise Diverged(
                    f"training diverged at stage {stage.name}, step {step} ({what})",
                    f"the last good checkpoint is in {latest_checkpoint(self.out)}; resume with a lower "
                    "learning rate or report the dataset",
                )
            if strategy is not None:
                strategy.step_post_backward(step, renders, optimizer)
            bar.update()
            if step % self.config.log_every == 0 or step == stage.iterations - 1:
                row = {
                    "stage": stage.name,
                    "step": step,
                    **terms,
                    "gaussians": len(model.head) + len(model.mouth),
                    "seconds": round(time.perf_counter() - t0, 4),
                }
                self._log(row)
                bar.set_postfix(loss=f"{terms['loss']:.4f}", psnr=f"{terms['psnr']:.2f}", n=row["gaussians"])
            if self.on_step is not None:
                self.on_step(self, stage, step)
            done = step + 1
            if self._stop or done % self.config.checkpoint_every == 0 or done == stage.iterations:
                finished = done == stage.iterations
                state = self._state(index + 1 if finished else index, 0 if finished else done)
                save_training_checkpoint(
                    self.out,
                    model,
                    state,
                    optimizer if done < stage.iterations else None,
                    gen.get_state(),
                )
            if self._stop:
                break
        bar.close()

    def _non_finite_parameter(self) -> str | None:
        """The name of the first parameter holding NaN or Inf, or None."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                return name
        return None

    def step(
        self, stage: StageConfig, i: int, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, float], dict[str, RenderOutput]]:
        """One optimisation step of ``stage`` on training frame ``i``: the loss terms, and the head's and
        mouth interior's renders (their ``means2d`` gradients feed densification)."""
        model = self.model
        target = self.data.target(i)
        drive = Drive(
            mesh=self.data.mesh(i),
            condition=self.data.condition(i) if stage.deform else None,
            code=self.codes[i],
        )
        frame = model(drive)
        comp = render_portrait(frame, self.data.camera(i), target.layer, backend=self.config.backend)
        weight = 1.0 + stage.mouth_region_weight * target.mouth_mask.float()[..., None]
        if stage.masked:
            # losses on the head regions only (averaged over them, not diluted by the rest of the frame),
            # and no head Gaussians where the frame shows hair, neck, torso or background
            inside = target.head_mask
            share = inside.float().mean().clamp(min=1e-3)
            pred = masked(comp.image, target.image, inside)
            # outside the mask the prediction is the target: both terms are computed on the mask's box
            # (plus twice the SSIM window's radius), with the whole image's normalisation
            crop = mask_box(inside, margin=2 * SSIM_RADIUS)
            n_pixels = inside.numel()
            diff = (weight * (pred - target.image).abs())[crop]
            loss_l1 = diff.sum() / (diff.shape[-1] * n_pixels) / share
            loss_ssim = (
                dssim(pred[crop], target.image[crop]) * _window_share(pred.shape, pred[crop].shape) / share
            )
            stray = (comp.head_alpha * (~inside).float()).mean() / (1 - share).clamp(min=1e-3)
            loss = loss_l1 + stage.dssim_weight * loss_ssim + stray
        else:
            pred = comp.image
            loss_l1 = (weight * (pred - target.image).abs()).mean()
            loss_ssim = dssim(pred, target.image)
            loss = loss_l1 + stage.dssim_weight * loss_ssim
        zero = torch.zeros((), device=pred.device)
        loss_mouth = loss_residual = loss_lpips = zero
        if stage.mouth_weight > 0:
            loss_mouth = mouth_mask_loss(
                comp.mouth_visible, target.labels == Region.MOUTH_INTERIOR, target.mouth_mask
            )
            loss = loss + stage.mouth_weight * loss_mouth
        if stage.residual_weight > 0 and frame.residual is not None:
            loss_residual = (frame.residual * 1000).pow(2).sum(-1).mean()  # mm²
            loss = loss + stage.residual_weight * loss_residual
        if stage.lpips_weight > 0 and self.lpips is not None:
            loss_lpips = self.lpips(pred, target.image)
            loss = loss + stage.lpips_weight * loss_lpips
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):  # a non-finite loss never reaches the parameters
            loss.backward()
            optimizer.step()
        values = {
            "loss": loss, "l1": loss_l1, "dssim": loss_ssim, "lpips": loss_lpips, "mouth": loss_mouth,
            "residual": loss_residual,
        }  # fmt: skip
        terms = {
            **{k: float(v.detach()) for k, v in values.items()},
            "psnr": psnr(comp.image.detach(), target.image),
        }
        return terms, {"head": comp.head, "mouth": comp.mouth}

    def _log(self, row: dict[str, Any]) -> None:
        """Append a row to log.csv (never truncated: rows a resumed run repeats are dropped on reading)."""
        path = self.out / "log.csv"
        with open(path, "a", newline="") as f:
            if f.tell() == 0:
                csv.writer(f).writerow(LOG_FIELDS)
            csv.DictWriter(f, LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})

    def plot(self) -> None:
        plot_losses(self.out / "log.csv", self.out / "loss.png")


def _window_share(full: torch.Size, crop: torch.Size) -> float:
    """Share of the whole image's SSIM windows that lie in the crop (SSIM maps are valid convolutions)."""
    side = 2 * SSIM_RADIUS
    return (crop[0] - side) * (crop[1] - side) / ((full[0] - side) * (full[1] - side))


def read_log(path: Path) -> list[dict[str, str]]:
    """log.csv's rows, one per (stage, step): where a resumed run logged a step again, its last row, in
    training order. A row cut short by a crash is skipped."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("seconds") not in (None, "") and r["stage"] != "stage"]
    latest = {(r["stage"], r["step"]): r for r in rows}
    return list(latest.values())


def plot_losses(log: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_path

    rows = read_log(log)
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    offset, x, names = 0, [], []
    last_stage, last_step = None, 0
    for r in rows:
        if r["stage"] != last_stage:
            offset += last_step if last_stage is not None else 0
            names.append((offset, r["stage"]))
            last_stage = r["stage"]
        last_step = int(r["step"]) + 1
        x.append(offset + int(r["step"]))
    for key in ("loss", "l1", "dssim", "mouth"):
        axes[0].plot(x, [float(r[key] or 0) for r in rows], label=key, lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_title("losses")
    axes[1].plot(x, [float(r["psnr"]) for r in rows], color="k", lw=0.8)
    axes[1].set_title("training PSNR (dB)")
    for ax in axes:
        for start, name in names:
            ax.axvline(start, color="grey", ls=":", lw=0.8)
            ax.text(start, ax.get_ylim()[1], name, fontsize=7, va="top")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def train(config: TrainConfig) -> Path:
    return Trainer(config).run()


__all__ = ["Trainer", "build_optimizer", "train"]
