"""The ``gstalk`` command: one subcommand per config dataclass, each a thin call into the library."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import tyro

from .config import (
    BenchConfig,
    DemoConfig,
    EvaluateConfig,
    ExportErnerfConfig,
    ImportErnerfConfig,
    PrepareConfig,
    RenderConfig,
    TrainConfig,
    save_config,
)
from .errors import GstalkError


def _bench(config: BenchConfig) -> Any:
    from .bench import run_bench

    return run_bench(config)


def _prepare(config: PrepareConfig) -> Any:
    from .prepare import prepare

    return prepare(config)


def _train(config: TrainConfig) -> Any:
    from .train import train

    return train(config)


def _render(config: RenderConfig) -> Any:
    from .drive import render_video

    return render_video(config)


def _evaluate(config: EvaluateConfig) -> Any:
    from .eval.evaluate import evaluate

    return evaluate(config)


def _demo(config: DemoConfig) -> Any:
    from .demo import run_demo

    return run_demo(config)


def _export_ernerf(config: ExportErnerfConfig) -> Any:
    from .data.ernerf import export_ernerf

    out = export_ernerf(config.dataset, config.out)
    save_config(config, out, name="gstalk_export_config.json")
    print(f"gstalk export-ernerf: wrote {out}")
    return out


def _import_ernerf(config: ImportErnerfConfig) -> Any:
    from .prepare import import_ernerf

    return import_ernerf(
        config.folder,
        config.out,
        fps=config.fps,
        audio_features=config.audio_features,
        speech_model=config.speech_model,
        overwrite=config.overwrite,
        progress=config.progress,
    )


#: subcommand name -> (config dataclass, function that runs it)
COMMANDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "prepare": (PrepareConfig, _prepare),
    "train": (TrainConfig, _train),
    "render": (RenderConfig, _render),
    "evaluate": (EvaluateConfig, _evaluate),
    "demo": (DemoConfig, _demo),
    "export-ernerf": (ExportErnerfConfig, _export_ernerf),
    "import-ernerf": (ImportErnerfConfig, _import_ernerf),
    "bench": (BenchConfig, _bench),
}


def main(argv: Sequence[str] | None = None) -> int:
    config = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()},
        prog="gstalk",
        description="Audio-driven 3D Gaussian Splatting talking heads: prepare, train, render, evaluate.",
        args=argv,
    )
    runner = next(fn for cls, fn in COMMANDS.values() if isinstance(config, cls))
    try:
        runner(config)
    except GstalkError as err:
        print(f"gstalk: error: {err.problem}", file=sys.stderr)
        if err.fix:
            print(f"  fix: {err.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gstalk: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
