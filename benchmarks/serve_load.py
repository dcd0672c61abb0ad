"""Load on `gstalk serve` over loopback: 1, 2 and 4 simultaneous streams, printed as JSON.

    python benchmarks/serve_load.py --run RUN [--streams 1 2 4] [--seconds 20] [--size 256]

A server process is started for the run (``--max-sessions`` = the largest stream count), and each stream
is a WebSocket client that sends speech in 20 ms chunks at real-time pace, as the page does. Per stream:
frames received per second, and the latency of each frame as the page measures it (how far the audio
clock has moved past the frame's own time when it arrives: lookahead + compute + queueing + delivery),
its median and 95th percentile. Per run: frames the server dropped, and the server's peak memory. The
benchmark stops by itself after each fixed duration. Run it alone on the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import tyro

CHUNK = 320  # 20 ms at 16 kHz


@dataclasses.dataclass
class Args:
    run: Path
    streams: tuple[int, ...] = (1, 2, 4)
    seconds: float = 20.0
    size: int = 256
    audio: Path = Path("../shared/data/audio/english_commentary_60s.wav")


async def _stream(url: str, avatar: str, speech: np.ndarray, seconds: float) -> dict:
    import aiohttp

    latencies, delivery = [], []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"type": "start", "avatar": avatar})
        ready = await ws.receive_json()
        if ready["type"] != "ready":
            return {"error": ready.get("message")}
        fps = ready["fps"]
        start = time.perf_counter()
        end_stats: dict = {}

        async def send():
            n = int(seconds * 16_000)
            for k, i in enumerate(range(0, n, CHUNK)):
                await ws.send_bytes(speech[i : i + CHUNK].tobytes())
                await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK / 16_000 - time.perf_counter()))
            await ws.send_json({"type": "end"})

        async def receive():
            async for msg in ws:
                now = time.perf_counter() - start
                if msg.type.name == "BINARY":
                    index, audio_seconds = struct.unpack("<If", msg.data[:8])
                    latencies.append(now - index / fps)
                    delivery.append(now - audio_seconds)
                else:
                    data = json.loads(msg.data)
                    if data["type"] == "end":
                        end_stats.update(data)
                        return

        await asyncio.gather(send(), receive())
    lat = np.array(latencies)
    return {
        "frames": len(lat),
        "frames_per_s": round(len(lat) / seconds, 1),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
        "ready_to_arrival_p50_ms": round(1000 * float(np.percentile(delivery, 50)), 1),
        "dropped_by_server": end_stats.get("dropped"),
    }


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main(args: Args) -> dict:
    import librosa

    from gstalk.bench import hardware

    speech = librosa.load(str(args.audio), sr=16_000, mono=True)[0].astype(np.float32)
    speech = np.tile(speech, int(np.ceil(args.seconds * 16_000 / len(speech))))
    rows = []
    for count in args.streams:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(args.run), "--port", str(port),
               "--size", str(args.size), "--max-sessions", str(max(args.streams))]  # fmt: skip
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert "gstalk serve:" in server.stdout.readline()
            url = f"http://127.0.0.1:{port}/ws"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/avatars") as r:
                avatar = json.load(r)["avatars"][0]

            async def together(count=count, url=url, avatar=avatar):
                return await asyncio.gather(
                    *[_stream(url, avatar, speech, args.seconds) for _ in range(count)]
                )

            streams = asyncio.run(together())
            rows.append(
                {"streams": count, "per_stream": streams, "server_peak_rss_mb": _peak_rss_mb(server.pid)}
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {"benchmark": "serve_load", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
              "run": str(args.run), "size": args.size, "seconds": args.seconds, "results": rows}  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
