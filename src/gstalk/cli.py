"""The ``gstalk`` command: one subcommand per config dataclass, each a thin call into the library."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union

import tyro

from .config import (
    BenchConfig,
    CheckConfig,
    DemoConfig,
    EvaluateConfig,
    ExportErnerfConfig,
    ImportErnerfConfig,
    PrepareConfig,
    PriorShowConfig,
    PriorTrainConfig,
    RenderConfig,
    ServeConfig,
    TrainConfig,
    save_config,
)
from .errors import GstalkError


def _bench(config: BenchConfig) -> Any:
    from .bench import run_bench

    return run_bench(config)


def _serve(config: ServeConfig) -> Any:
    from .serve import serve

    return serve(config)


def _check(config: CheckConfig) -> Any:
    from .data.check import check_dataset
    from .data.dataset import load_dataset
    from .data.summary import Summary

    check_dataset(config.dataset)
    ds = load_dataset(config.dataset)
    print(f"gstalk check: {config.dataset} is sound ({ds.n_frames} frames at {ds.size}², {ds.fps:g} fps)")
    summary = Summary.read(config.dataset)
    for line in summary.check_lines() if summary is not None else []:
        print(f"  {line}")
    return ds


def _prior_train(config: PriorTrainConfig) -> Any:
    from .train.prior import train_prior

    return train_prior(config)


def _prior_show(config: PriorShowConfig) -> Any:
    from .speech.prior import describe_prior

    print(describe_prior(config.prior))
    return config.prior


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
        whisper=config.whisper,
        speech_model=config.speech_model,
        overwrite=config.overwrite,
        progress=config.progress,
    )


#: subcommand name -> (config dataclass, function that runs it)
COMMANDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "prepare": (PrepareConfig, _prepare),
    "check": (CheckConfig, _check),
    "train": (TrainConfig, _train),
    "render": (RenderConfig, _render),
    "evaluate": (EvaluateConfig, _evaluate),
    "demo": (DemoConfig, _demo),
    "export-ernerf": (ExportErnerfConfig, _export_ernerf),
    "import-ernerf": (ImportErnerfConfig, _import_ernerf),
    "serve": (ServeConfig, _serve),
    "bench": (BenchConfig, _bench),
}

#: `gstalk prior train|show`: subcommands of their own
PRIOR_COMMANDS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "train": (PriorTrainConfig, _prior_train),
    "show": (PriorShowConfig, _prior_show),
}
PRIOR_HELP = (
    "The speaker-independent motion prior every avatar starts from: train one on a corpus, or show one."
)


def _union(commands: dict[str, tuple[type, Callable[[Any], Any]]], extra: dict[str, tuple[Any, str]]):
    """The tyro type of the command line: a subcommand per entry of ``commands`` (its dataclass), plus
    ``extra`` (name → (type, help)) for groups of subcommands."""
    entries = [
        Annotated[Any, tyro.conf.subcommand(name=k, constructor=cls)] for k, (cls, _) in commands.items()
    ]
    entries += [
        Annotated[kind, tyro.conf.subcommand(name=k, description=text)] for k, (kind, text) in extra.items()
    ]
    return Union[tuple(entries)]  # noqa: UP007


def main(argv: Sequence[str] | None = None) -> int:
    prior = _union(PRIOR_COMMANDS, {})
    config = tyro.cli(
        _union(COMMANDS, {"prior": (prior, PRIOR_HELP)}),
        prog="gstalk",
        description="Audio-driven 3D Gaussian Splatting talking heads: prepare, train, render, evaluate.",
        args=argv,
    )
    everything = [*COMMANDS.values(), *PRIOR_COMMANDS.values()]
    runner = next(fn for cls, fn in everything if isinstance(config, cls))
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
    except OSError as err:  # disk full, permissions, a folder where a file was meant: no traceback
        problem, fix = os_error_advice(err)
        print(f"gstalk: error: {problem}", file=sys.stderr)
        print(f"  fix: {fix}", file=sys.stderr)
        return 2
    return 0


def os_error_advice(err: OSError) -> tuple[str, str]:
    """A message and a fix for an operating-system error that escaped the commands' own checks."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    reason = err.strerror or str(err)
    fixes = {
        errno.ENOSPC: "free disk space, then run the same command again (prepare and train resume)",
        errno.EDQUOT: "free disk space, then run the same command again (prepare and train resume)",
        errno.EACCES: "check the permissions of that path, or choose another output",
        errno.EPERM: "check the permissions of that path, or choose another output",
        errno.EISDIR: "pass a file path there, not a folder",
        errno.ENOTDIR: "a path component is a file: choose another path",
        errno.EROFS: "choose an output on a writable disk",
        errno.ENOENT: "check that the path exists",
    }
    return f"{reason}{where}", fixes.get(err.errno, "check the path and the disk, then run the command again")


if __name__ == "__main__":
    sys.exit(main())
