"""One training loop driven by a list of stage configs: static → motion → fusion.

The run folder holds ``config.json`` (the TrainConfig), ``log.csv`` and ``loss.png`` (curves),
``checkpoints/`` (versioned states for ``--resume``, crash-safe: see ``train.checkpoint``) and, when
training ends, ``model/`` (the final weights that render and evaluate read).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..config import (
    FEW_SHOT_SECONDS,
    LearningRates,
    StageConfig,
    TrainConfig,
    config_to_dict,
    resolve_model,
    resolve_train,
    save_config,
    stages,
)
from ..data.check import check_dataset
from ..data.dataset import load_dataset
from ..data.frames import FrameData
from ..data.run_layout import AUDIO_MOTION, LOG, LOSS_PLOT, model_dir, stage_dir
from ..device import pick_device
from ..errors import GstalkError
from ..fileio import strict_json, write_json_atomic
from ..model.checkpoint import load_model, save_model
from ..model.init import init_talking_head
from ..model.talking_head import Drive, TalkingHead, render_portrait
from ..outputs import claim_output
from ..speech import silence_features
from ..speech.person import PersonMotion
from ..speech.prior import MotionPrior, load_prior
from ..splat import RenderOutput
from ..splat.threads import serial_torch
from ..timing import NO_LAPS, Laps
from .audio_motion import fit_audio_motion, target_coefficients
from .checkpoint import latest_checkpoint, load_training_state, save_training_checkpoint
from .log import append_row, plot_losses, read_log
from .losses import psnr
from .objective import loss_terms, total_loss
from .person import fit_person_motion, photo_person_motion
from .strategy import DensifyStrategy, scene_extent


class Diverged(GstalkError):
    pass


def build_optimizer(
    model: TalkingHead, stage: StageConfig, extent: float, lr: LearningRates
) -> torch.optim.Adam:
    """Adam with a learning rate per parameter kind, scaled by the stage's ``lr_scale`` (PyTorch's fused
    implementation for float32 CPU and CUDA parameters)."""
    s = stage.lr_scale
    groups: list[dict[str, Any]] = []
    if "gaussians" in stage.train:
        for gs in (model.head,) if stage.frozen_mouth else (model.head, model.mouth):
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
        colours = model.color_parameters()[:1] if stage.frozen_mouth else model.color_parameters()
        groups.append({"params": colours, "lr": lr.colors_only * s, "name": "colors"})
    if "networks" in stage.train:
        groups += [
            {"params": [model.encoder.tables], "lr": lr.hash * s, "name": "hash"},
            {
                "params": [p for p in model.network_parameters() if p is not model.encoder.tables],
                "lr": lr.networks * s,
                "name": "networks",
            },
        ]
    # fused: one kernel per step for all parameters (on a CPU about a third of the per-tensor loop's time)
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.Adam(groups, eps=1e-15, fused=fused)


StepHook = Callable[["Trainer", StageConfig, int], None]


class Trainer:
    """Runs the stages of a TrainConfig over one model. ``on_step(trainer, stage, step)`` is called after
    every step (progress reporting, or :meth:`request_stop`)."""

    def __init__(self, config: TrainConfig, on_step: StepHook | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = pick_device(config.device)
        check_dataset(config.dataset)  # every problem at once, before minutes of training
        self.ds = load_dataset(config.dataset)
        if len(self.ds.train_ids) < 10 and not self.ds.is_photo:
            raise GstalkError(
                f"{config.dataset} has only {len(self.ds.train_ids)} usable training frames",
                "prepare a longer clip (5 seconds or more)",
            )
        seconds = len(self.ds.train_ids) / self.ds.fps
        self.config = resolve_train(config, seconds, photo=self.ds.is_photo)
        if config.preset == "auto" and self.ds.is_photo:
            self._say("preset photo: one photo (a one-shot avatar: appearance from the photo, its hidden "
                      "side by symmetry, its motion from the motion prior)", always=True)  # fmt: skip
        elif config.preset == "auto":
            self._say(f"preset {self.config.preset}: {seconds:.1f} s of training frames "
                      f"({'under' if self.config.preset == 'few' else 'at least'} {FEW_SHOT_SECONDS:g} s)",
                      always=True)  # fmt: skip
        if self.ds.is_photo:  # the basis is the prior's space itself (model.init.prior_basis)
            motion = dataclasses.replace(config.model, motion_components=self._photo_components())
            self.config = dataclasses.replace(self.config, model=motion)
        m = resolve_model(self.config.model, self.ds.audio_spec.features)
        self.config = dataclasses.replace(self.config, model=m)
        silence = partial(silence_features, self.ds.audio_spec)
        self.data = FrameData(self.ds, self.config.size, self.device, m.context_past, m.context_future,
                              silence=silence)  # fmt: skip
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
            self.ds, self.config.max_gaussians, config=self.config.model, seed=self.config.seed,
            prior=self.prior,
        ).to(self.device)  # fmt: skip
        return self.model

    @cached_property
    def prior(self) -> MotionPrior | None:
        """The motion prior this run starts from (``--prior``), or None: ``--prior none``, or the builtin
        prior with a dataset whose features it does not read (said in the log). Raises
        :class:`GstalkError` for a prior the user named that cannot be loaded or does not fit."""
        prior = load_prior(self.config.prior)
        if prior is None:
            return None
        why = prior.check_features(self.ds.audio_spec)
        if why is None:
            return prior
        if self.config.prior != "builtin":
            raise GstalkError(
                f"the motion prior {self.config.prior} does not fit this dataset: {why}",
                "prepare the dataset with the prior's Whisper settings, or pass --prior none",
            )
        self._say(f"training without the motion prior ({why}); prepare with the default Whisper features "
                  "to start from it", always=True)  # fmt: skip
        return None

    def attach(self, model: TalkingHead) -> None:
        """Train ``model`` from here on: it becomes ``self.model``, with the tracked lower-face codes of the
        training frames (teacher forcing) on the trainer's device."""
        self.model = model
        self.codes = torch.from_numpy(target_coefficients(self.ds, model.basis.cpu())).to(self.device)
        model.basis.to(self.device)

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
            if latest is not None or model_dir(self.out).exists():
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
        self.attach(model)
        gen = torch.Generator().manual_seed(self.config.seed)
        previous = signal.signal(signal.SIGINT, self._interrupt)
        try:
            for index in range(start_stage, len(self.stages)):
                if self.stages[index].iterations == 0:  # (the photo preset has no motion stage)
                    continue
                first = start_step if index == start_stage else 0
                resume_from = latest if (index == start_stage and start_step > 0) else None
                self._run_stage(index, first, gen, resume_from)
                if not self._stop:  # each finished stage's model, e.g. the static baseline of evaluate
                    save_model(stage_dir(self.out, self.stages[index].name), model, self._final_state())
                if self._stop:
                    self._say(
                        f"interrupted: checkpoint saved in {latest_checkpoint(self.out)}; "
                        "continue with the same command and --resume",
                        always=True,
                    )
                    raise KeyboardInterrupt
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.ds.is_photo:
            self.fill_by_symmetry()
        save_model(model_dir(self.out), model, self._final_state())
        self.plot()
        self._say(f"done: model in {model_dir(self.out)}")
        return self.out

    def _photo_components(self) -> int:
        if self.prior is None:
            raise GstalkError(
                f"{self.config.dataset} was made from one photo, whose avatar moves only through the motion "
                "prior",
                "train it with the builtin prior (leave out --prior none); prepare it with the default "
                "Whisper features",
            )
        return int(self.prior.space.basis.shape[0])

    def fill_by_symmetry(self) -> dict[str, float]:
        """A photo's run: what the photo did not show, filled from the face's other side
        (``model.symmetry``)."""
        from ..model.symmetry import symmetric_fill

        i = int(self.ds.train_ids[0])
        figures = symmetric_fill(self.model, self.ds.world_to_cam[i], self.ds.intrinsics)
        self._say(f"symmetry: {figures['hidden_fraction']:.0%} of the head's Gaussians hidden in the photo, "
                  "filled from their mirror images")  # fmt: skip
        return figures

    def fit_audio_motion(self) -> dict[str, float]:
        """Stage 0: fit the audio → motion model (no rendering); its held-out figures go to
        ``audio_motion.json`` in the run folder. A photo has no speech: its motion is the prior's."""
        model = self.model
        model.motion.cpu()
        if self.ds.is_photo:
            self._say("audio → motion: one photo, so the motion prior as it is, on the photo's face")
            figures = photo_person_motion(self.ds, model.basis.cpu(), model.motion, self.prior.cpu())
            model.to(self.device)
            write_json_atomic(self.out / AUDIO_MOTION, strict_json(figures))
            return figures
        if isinstance(model.motion, PersonMotion):
            self._say(f"audio → motion: the motion prior ({self.config.prior}) moved toward this clip")
            figures = fit_person_motion(self.ds, model.basis.cpu(), model.motion, self.prior.cpu(),
                                        self.config.audio_motion, progress=self.config.progress)  # fmt: skip
        else:
            self._say("audio → motion: fitting the lower face's motion to the speech (no prior)")
            figures = fit_audio_motion(self.ds, model.basis.cpu(), model.motion, self.config.audio_motion,
                                       progress=self.config.progress)  # fmt: skip
        model.to(self.device)
        write_json_atomic(self.out / AUDIO_MOTION, strict_json(figures))
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
        bar = tqdm(
            total=stage.iterations,
            initial=first_step,
            desc=f"{stage.name:<7}",
            unit="it",
            disable=not self.config.progress,
        )
        with serial_torch():
            self._steps(stage, index, range(first_step, stage.iterations), optimizer, strategy, gen, bar)
        bar.close()

    def _steps(self, stage: StageConfig, index: int, steps: range, optimizer, strategy, gen, bar) -> None:
        """The stage's steps ``steps``: each with its checks, densification, log row, hook and checkpoint."""
        model = self.model
        train_ids = torch.from_numpy(self.ds.train_ids)
        for step in steps:
            t0 = time.perf_counter()
            i = int(train_ids[torch.randint(len(train_ids), (1,), generator=gen)])
            ahead = torch.Generator().set_state(gen.get_state())  # the next step's frame, gen untouched
            after = int(train_ids[torch.randint(len(train_ids), (1,), generator=ahead)])
            self._check_parameters(stage, step, bar)
            stats = strategy is not None and strategy.wants_stats and step <= strategy.stop
            terms, renders = self.step(
                stage, i, optimizer, read_ahead=after, stats=stats
            )  # render → loss → step
            self._check_loss(stage, step, terms["loss"], bar)
            if strategy is not None:  # densify and prune
                strategy.step_post_backward(step, renders, optimizer)
            bar.update()
            if step % self.config.log_every == 0 or step == stage.iterations - 1:
                self._log(stage, step, terms, time.perf_counter() - t0, bar)
            if self.on_step is not None:
                self.on_step(self, stage, step)
            done = step + 1
            if self._stop or done % self.config.checkpoint_every == 0 or done == stage.iterations:
                finished = done == stage.iterations
                state = self._state(index + 1 if finished else index, 0 if finished else done)
                kept = None if finished else optimizer
                save_training_checkpoint(self.out, model, state, kept, gen.get_state())
            if self._stop:
                break

    def _log(self, stage: StageConfig, step: int, terms: dict[str, float], seconds: float, bar: tqdm) -> None:
        """A row of log.csv, and the progress bar's figures."""
        n = len(self.model.head) + len(self.model.mouth)
        row = {"stage": stage.name, "step": step, **terms, "gaussians": n, "seconds": round(seconds, 4)}
        append_row(self.out / LOG, row)
        bar.set_postfix(loss=f"{terms['loss']:.4f}", psnr=f"{terms['psnr']:.2f}", n=n)

    def _check_parameters(self, stage: StageConfig, step: int, bar: tqdm) -> None:
        broken = self._non_finite_parameter()
        if broken is not None:
            self._diverged(stage, step, f"{broken} holds NaN or Inf", bar)

    def _check_loss(self, stage: StageConfig, step: int, loss: float, bar: tqdm) -> None:
        if not math.isfinite(loss):
            self._diverged(stage, step, f"loss {loss}", bar)

    def _diverged(self, stage: StageConfig, step: int, what: str, bar: tqdm) -> None:
        bar.close()
        raise Diverged(
            f"training diverged at stage {stage.name}, step {step} ({what})",
            f"the last good checkpoint is in {latest_checkpoint(self.out)}; resume with a lower "
            "learning rate or report the dataset",
        )

    def _non_finite_parameter(self) -> str | None:
        """The name of the first parameter holding NaN or Inf, or None."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                return name
        return None

    def step(
        self,
        stage: StageConfig,
        i: int,
        optimizer: torch.optim.Optimizer,
        laps: Laps | None = None,
        read_ahead: int | None = None,
        stats: bool = False,
    ) -> tuple[dict[str, float], dict[str, RenderOutput]]:
        """One optimisation step of ``stage`` on training frame ``i``: render, loss, step. Returns the loss
        terms (``objective.loss_terms``, their total as ``loss``, and ``psnr``), and the head's and mouth
        interior's renders (their ``means2d`` gradients feed densification). ``read_ahead``: the next
        step's frame, read on a background thread meanwhile. ``laps``, when given, accumulates the time
        of each part (``target``, ``forward``, ``render``, ``loss``, ``backward``, ``optimizer``,
        ``figures``) for ``gstalk bench``. ``stats``: the renders carry densification's statistics."""
        laps = laps or NO_LAPS
        laps.start()
        target = self.data.target(i)
        if read_ahead is not None:
            self.data.read_ahead(read_ahead)
        laps.lap("target")
        drive = Drive(
            mesh=self.data.mesh(i),
            condition=self.data.condition(i) if stage.deform else None,
            code=self.codes[i],
        )
        frame = self.model(drive)
        laps.lap("forward")
        comp = render_portrait(
            frame, self.data.camera(i), target.layer, backend=self.config.backend, stats=stats
        )
        laps.lap("render")
        terms = loss_terms(stage, comp, frame, target, self.lpips)
        loss = total_loss(stage, terms)
        laps.lap("loss")
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:  # a non-finite loss never reaches the parameters
            loss.backward()
        laps.lap("backward")
        if finite:
            optimizer.step()
        laps.lap("optimizer")
        values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        values["psnr"] = psnr(comp.image.detach(), target.image)
        laps.lap("figures")
        return values, {"head": comp.head, "mouth": comp.mouth}

    def plot(self) -> None:
        plot_losses(self.out / LOG, self.out / LOSS_PLOT)


def train(config: TrainConfig) -> Path:
    return Trainer(config).run()


__all__ = ["Trainer", "build_optimizer", "read_log", "train"]
