"""``gstalk demo``: the whole pipeline on the embedded subject (or your video), resumable."""

from __future__ import annotations

from pathlib import Path

import soundfile
from tqdm import tqdm

from ..config import DemoConfig, EvaluateConfig, PrepareConfig, RenderConfig, TrainConfig, save_config
from ..data.run_layout import METRICS, MODEL_FILE, REPORT, eval_dir, model_dir
from ..media.audio import AUDIO_RATE
from ..train.checkpoint import latest_checkpoint
from .subject import make_demo_subject, speech_like_audio


def run_demo(config: DemoConfig) -> dict[str, Path]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)

    def say(text: str) -> None:
        if config.progress:
            tqdm.write(f"gstalk demo: {text}")

    video = config.video
    if video is None:
        video = out / "subject.mp4"
        if not video.is_file():
            say("generating the default subject: a talking version of a public-domain NASA portrait")
            make_demo_subject(video, seconds=config.seconds)
    audio = config.audio
    if audio is None:
        audio = out / "second_speech.wav"
        if not audio.is_file():
            soundfile.write(audio, speech_like_audio(8.0, seed=7).audio, AUDIO_RATE)
    dataset = out / "dataset"
    from ..prepare import prepare

    say("1/4 prepare")
    # a fifth held out (not the papers' 1/11), so the report's side-by-side video is long enough to watch
    test_fraction = 0.2 if config.video is None else PrepareConfig.test_fraction
    prepare(PrepareConfig(video=video, out=dataset, size=config.size, test_fraction=test_fraction,
                          progress=config.progress))  # fmt: skip
    run = out / "run"
    say("2/4 train")
    if not (model_dir(run) / MODEL_FILE).is_file():
        from ..train import train

        train(
            TrainConfig(
                dataset=dataset,
                out=run,
                size=config.size,
                max_gaussians=config.max_gaussians,
                iterations=config.iterations,
                device=config.device,
                progress=config.progress,
                resume=latest_checkpoint(run) is not None,
            )
        )
    say("3/4 render the second speech")
    from ..drive import render_video

    talking = out / "talking.mp4"
    # overwrite: the demo's own video of an earlier run (only a video gstalk made is replaced)
    render_video(
        RenderConfig(
            run=run, audio=audio, out=talking, device=config.device, progress=config.progress, overwrite=True
        )
    )
    say("4/4 evaluate")
    from ..eval.evaluate import evaluate

    evaluate(EvaluateConfig(run=run, cross_audio=(audio,), device=config.device, progress=config.progress))
    paths = {
        "video": talking,
        "report": eval_dir(run) / REPORT,
        "metrics": eval_dir(run) / METRICS,
    }
    print(f"gstalk demo: video  {paths['video']}")
    print(f"gstalk demo: report {paths['report']}")
    return paths
