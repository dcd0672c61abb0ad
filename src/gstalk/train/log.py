"""A run's training log: ``log.csv`` (one row per logged step, append-only) and ``loss.png``.

The file is only ever appended to, so a crash never loses what was logged; a resumed run repeats some
steps, and :func:`read_log` keeps the last row of each (stage, step).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..errors import GstalkError
from ..fileio import atomic_path

#: columns of log.csv: the stage and step, the total and every loss term, PSNR, the size of the model and
#: the step's seconds
LOG_FIELDS = [
    "stage", "step", "loss", "l1", "dssim", "lpips", "mouth", "residual", "psnr", "gaussians", "seconds",
    "detail", "mouth_detail", "coverage", "stray",
]  # fmt: skip


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the log at ``path`` (the header first when the file is new); unknown keys are
    dropped, missing ones left empty."""
    with open(path, "a", newline="") as f:
        if f.tell() == 0:
            csv.writer(f).writerow(LOG_FIELDS)
        csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore").writerow({k: row.get(k, "") for k in LOG_FIELDS})


def read_log(path: Path) -> list[dict[str, str]]:
    """log.csv's rows, one per (stage, step): where a resumed run logged a step again, its last row, in
    training order. A row cut short by a crash, or whose numbers do not read as numbers, is skipped.
    Raises GstalkError when the file is not text (damaged)."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if _complete(r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise GstalkError(
            f"the training log {path} is damaged ({type(err).__name__}: {err})",
            f"move {Path(path).name} away: training goes on and starts a new log (the checkpoints hold the "
            "model)",
        ) from None
    latest = {(r["stage"], r["step"]): r for r in rows}
    return list(latest.values())


def _complete(row: dict[str, str | None]) -> bool:
    """A logged row with its stage, an integer step and the numbers the plot reads."""
    if row.get("seconds") in (None, "") or row.get("stage") in (None, "stage"):
        return False
    try:
        int(row["step"] or "")
        for key in ("loss", "l1", "dssim", "mouth", "psnr"):
            float(row.get(key) or 0)
    except (TypeError, ValueError):
        return False
    return True


def plot_losses(log: Path, out: Path) -> None:
    """``loss.png``: the loss terms (log scale) and the training PSNR over all stages, stage starts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    for key in ("loss", "l1", "dssim", "mouth", "detail"):
        if any(r.get(key) for r in rows):
            axes[0].plot(x, [float(r.get(key) or 0) for r in rows], label=key, lw=0.8)
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


__all__ = ["LOG_FIELDS", "append_row", "plot_losses", "read_log"]
