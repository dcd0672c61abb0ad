"""Audio–video sync of `gstalk serve` in a real browser over a long session, printed as JSON.

    python benchmarks/serve_sync.py --run RUN [--seconds 60] [--size 256]

Starts a server for the run and opens its page in headless Chromium (Debian's, driven by Playwright).
The page plays a speech file (the file path, as a user would drop it) and shows each frame when its sound
is heard. For every frame drawn, the page records how far from that moment it was drawn, on the audio
clock (``gstalkStats.sync``, seconds; positive = late). The JSON has the median, the 95th percentile and
the largest absolute offset, the frames drawn and dropped, and the page's latency figures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import tyro


@dataclasses.dataclass
class Args:
    run: Path
    seconds: float = 60.0
    size: int = 256
    audio: Path = Path("../shared/data/audio/english_commentary_60s.wav")


def _wait_until(page, expression: str, timeout: float) -> None:
    """Poll ``expression`` in the page until true (``wait_for_function`` needs ``new Function``, which the
    page's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {expression}")
        page.wait_for_timeout(100)


def main(args: Args) -> dict:
    import librosa
    from playwright.sync_api import sync_playwright

    from gstalk.bench import hardware

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium (Debian: apt-get install chromium)")
    speech = librosa.load(str(args.audio), sr=16_000, mono=True)[0]
    speech = np.tile(speech, int(np.ceil(args.seconds * 16_000 / len(speech))))[: int(args.seconds * 16_000)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(args.run), "--port", str(port),
           "--size", str(args.size), "--max-session-seconds", str(args.seconds + 5)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert "gstalk serve:" in server.stdout.readline()
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            wav = Path(tmp) / "speech.wav"
            soundfile.write(wav, speech, 16_000, subtype="PCM_16")
            flags = ["--autoplay-policy=no-user-gesture-required", "--no-sandbox"]
            browser = p.chromium.launch(executable_path=chromium, args=flags)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            _wait_until(page, "document.getElementById('avatar').options.length > 0", 30)
            start = time.perf_counter()
            page.set_input_files("#file", str(wav))
            _wait_until(page, "window.gstalkStats.ended", args.seconds + 60)
            page.wait_for_timeout(1500)  # the last scheduled frames are drawn
            stats = page.evaluate("window.gstalkStats")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    sync = np.abs(np.array(stats["sync"], float))
    latency = np.array(stats["latencies"], float)
    result = {
        "benchmark": "serve_sync", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
        "run": str(args.run), "size": args.size, "seconds": args.seconds,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "frames_drawn": int(sync.size), "dropped_by_server": stats["dropped"],
        "sync_abs_p50_ms": round(1000 * float(np.percentile(sync, 50)), 1),
        "sync_abs_p95_ms": round(1000 * float(np.percentile(sync, 95)), 1),
        "sync_abs_max_ms": round(1000 * float(sync.max()), 1),
        "late_over_40ms_share": round(float((np.array(stats["sync"]) > 0.040).mean()), 4),
        "latency_p50_s": round(float(np.percentile(latency, 50)), 3),
        "latency_p95_s": round(float(np.percentile(latency, 95)), 3),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
