"""A self-contained HTML report: side-by-side video (real | rendered, with sound), per-frame metric plots,
the loss curves and the dataset's contact sheet, all embedded (one file to send or archive)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..data.layout import CONTACT_SHEET
from ..data.run_layout import LOSS_PLOT, MOUTH_SHEET, REPORT, SIDE_BY_SIDE
from ..fileio import atomic_path, write_text_atomic
from ..media.audio import AUDIO_RATE
from ..media.encode import write_video


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(path: Path) -> str | None:
    return _b64(path.read_bytes()) if path.is_file() else None


def _img(b64: str | None, missing: str) -> str:
    return f'<img src="data:image/png;base64,{b64}">' if b64 else f"<p>{html.escape(missing)}</p>"


def _plots(results, ids, fps, energy, real_open, rendered_open) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(ids) / fps
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    for mode, rows in results.items():
        axes[0].plot(t, [r["psnr"] for r in rows], lw=0.9, label=mode)
        axes[1].plot(t, [r["mouth_psnr"] for r in rows], lw=0.9, label=mode)
        axes[2].plot(t, [np.nan if r["lmd"] is None else r["lmd"] for r in rows], lw=0.9, label=mode)
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_ylabel("mouth PSNR (dB)")
    axes[2].set_ylabel("LMD (px @512²)")
    axes[3].plot(t, real_open, color="k", lw=0.9, label="real mouth opening")
    axes[3].plot(t, rendered_open, color="crimson", lw=0.9, label="rendered mouth opening")
    ax2 = axes[3].twinx()
    ax2.plot(t, energy, color="grey", lw=0.6, alpha=0.6, label="audio energy (dB)")
    ax2.set_ylabel("audio dB", color="grey")
    axes[3].set_ylabel("mouth opening")
    axes[3].set_xlabel("time in the clip (s)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=85)
    plt.close(fig)
    return buf.getvalue()


#: one line per score, shown beside it
EXPLAINED = {
    "psnr": "whole-frame fidelity to the real held-out frame, dB (higher is better)",
    "ssim": "structural similarity to the real frame, 0–1 (higher is better)",
    "mouth_psnr": "fidelity of the mouth crop alone, dB: where speech shows (higher is better)",
    "lmd": "mean distance of MediaPipe's mouth landmarks, rendered vs real, px at 512² (lower is better)",
    "lpips": "learned perceptual distance (lower is better); needs --lpips-weights",
    "lse_c": "SyncNet's confidence that lips and audio match (higher is better); needs --syncnet-weights",
    "lse_d": "SyncNet's lip–audio feature distance (lower is better); needs --syncnet-weights",
}


def _table(metrics: dict[str, Any]) -> str:
    modes = [m for m in ("full", "zero_audio", "static") if m in metrics]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in modes)
    rows = []
    for k, meaning in EXPLAINED.items():
        cells = "".join(f"<td>{html.escape(_shown(metrics[m].get(k)))}</td>" for m in modes)
        rows.append(f"<tr><th>{k}</th>{cells}<td style='text-align:left'>{html.escape(meaning)}</td></tr>")
    return f"<table><tr><th></th>{head}<th></th></tr>{''.join(rows)}</table>"


def _shown(value: Any) -> str:
    missing = value is None or (isinstance(value, str) and "not computed" in value)
    return "not computed" if missing else str(value)


def _poster(seq) -> str:
    """A JPEG of the middle frame pair (real | rendered): the video's poster, so it never shows as a black
    box before it plays."""
    import cv2

    k = len(seq.real) // 2
    ok, buf = cv2.imencode(".jpg", np.concatenate([seq.real[k], seq.rendered[k]], axis=1)[..., ::-1])
    return _b64(buf.tobytes()) if ok else ""


def write_report(out: Path, driver, metrics: dict[str, Any], results: dict[str, list], seq) -> Path:
    """``seq``: the evaluated test sequence (``evaluate.TestSequence``)."""
    fps = driver.fps
    ids = seq.ids
    video = out / SIDE_BY_SIDE
    pairs = (np.concatenate([r, f], axis=1) for r, f in zip(seq.real, seq.rendered))
    seg = seq.speech[int(ids[0] / fps * AUDIO_RATE) : int((ids[-1] + 1) / fps * AUDIO_RATE)]
    with atomic_path(video) as tmp:
        write_video(tmp, pairs, fps, seg, AUDIO_RATE)
    plots = _b64(_plots(results, ids, fps, seq.energy, seq.real_open, seq.rendered_open))
    loss = _png(Path(driver.run) / LOSS_PLOT)
    sheet = _png(driver.ds.root / CONTACT_SHEET)
    sync = metrics["lip_sync"]
    cross = (
        "".join(
            f"<tr><td>{html.escape(c['audio'])}</td><td>{c['seconds']}</td><td>{c['correlation']}</td>"
            f"<td>{c['offset_frames']}</td><td>{c['opening_range_ratio']}</td><td>{c['seam_share']}</td></tr>"
            for c in metrics["cross_audio"]
        )
        or "<tr><td colspan=6>none given (--cross-audio FILE ...)</td></tr>"
    )
    art = metrics["articulation"]
    articulation = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{art.get(k)}</td><td style='text-align:left'>"
        f"{html.escape(art['measures'].get(k, ''))}</td></tr>"
        for k in ("opening_correlation", "opening_range_ratio", "lip_vertex_error_mm", "seam_share")
    )
    mouth = _png(out / MOUTH_SHEET)
    static = metrics.get("static", {}).get("model", "not evaluated")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>gstalk report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
img,video{{max-width:100%}}h2{{margin-top:1.6em}}</style></head><body>
<h1>gstalk evaluation</h1>
<p>Run <code>{html.escape(str(driver.run))}</code>, dataset <code>{html.escape(str(driver.ds.root))}</code>,
{metrics["test_frames"]} held-out frames at {metrics["size"]}².
LMD in pixels at {metrics["lmd_pixels_at"]}².</p>
<h2>Metrics (test split)</h2>{_table(metrics)}
<p><b>full</b>: the model driven by the clip's own held-out speech; <b>zero_audio</b>: the same model
driven with silence (what the audio adds); <b>static</b>: {html.escape(static)}.</p>
<h2>Articulation (held-out frames)</h2><table>{articulation}</table>
<h3>Rendered at the most closed and the most open predicted mouth (real frames below)</h3>
{_img(mouth, "no mouth sheet")}
<h2>Lip sync</h2><p>{html.escape(sync["measure"])}.</p>
<table><tr><th></th><th>correlation</th><th>best offset (frames)</th><th>at offset 0</th></tr>
<tr><th>real video</th><td>{sync["real"]["correlation"]}</td><td>{sync["real"]["offset_frames"]}</td>
<td>{sync["real"]["correlation_at_zero"]}</td></tr>
<tr><th>rendered</th><td>{sync["rendered"]["correlation"]}</td><td>{sync["rendered"]["offset_frames"]}</td>
<td>{sync["rendered"]["correlation_at_zero"]}</td></tr></table>
<h3>Driven by other speakers</h3><table><tr><th>audio</th><th>seconds</th><th>correlation</th>
<th>best offset</th><th>opening range ratio</th><th>seam share</th></tr>{cross}</table>
<h2>Side by side: real | rendered</h2>
<p>The held-out part of the clip ({len(seq.real) / fps:.1f} s), with its sound; it loops.</p>
<video controls loop preload="auto" poster="data:image/jpeg;base64,{_poster(seq)}"
 src="data:video/mp4;base64,{_b64(video.read_bytes())}"></video>
<h2>Per-frame metrics</h2><img src="data:image/png;base64,{plots}">
<h2>Training losses</h2>{_img(loss, "no loss.png in the run")}
<h2>Dataset contact sheet</h2>{_img(sheet, "no contact sheet in the dataset")}
</body></html>"""
    path = out / REPORT
    write_text_atomic(path, body)
    return path
