"""Load on `gstalk serve` over loopback: 1, 2 and 4 simultaneous streams, on the single process and on a
local Ray Serve with 2 replicas, in one run, printed as JSON.

    python benchmarks/serve_load.py --run RUN [--streams 1 2 4] [--seconds 20] [--size 256]
                                    [--modes single ray] [--replicas 2] [--replica-cpus 1]

Per mode, one server is started (`gstalk serve`, and `gstalk serve --ray local --replicas 2` with each
replica's cap the largest stream count / replicas), and each stream count runs against it in turn. Each
stream is a WebSocket client that sends speech in 20 ms chunks at real-time pace, as the page does. Per
stream: frames received per second, and the latency of each frame as the page measures it (how far the
audio clock has moved past the frame's own time when it arrives: lookahead + compute + queueing +
delivery), its median and 95th percentile, and the frame's hop from the render worker to the front end
(median, as the server reports it). Per mode and count: the front end's memory and, on Ray, each
replica's (resident now, and peak). Ray's overhead per frame is the Ray hop minus the in-process hop, and
the latency difference, side by side. The benchmark stops by itself after each fixed duration. Run it
alone on the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import signal
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
REPLICA_TITLE = "ray::ServeReplica:gstalk:RenderReplica"


@dataclasses.dataclass
class Args:
    run: Path
    streams: tuple[int, ...] = (1, 2, 4)
    seconds: float = 20.0
    size: int = 256
    modes: tuple[str, ...] = ("single", "ray")
    replicas: int = 2
    replica_cpus: float = 1.0
    audio: Path = Path("../shared/data/audio/english_commentary_60s.wav")
    """Speech to send (a generated speech-like signal when the file is absent)."""


async def _stream(url: str, avatar: str, speech: np.ndarray, seconds: float) -> dict:
    import aiohttp

    latencies, delivery, sizes = [], [], []
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
                    sizes.append(len(msg.data) - 8)
                    delivery.append(now - audio_seconds)
                else:
                    data = json.loads(msg.data)
                    if data["type"] == "error":
                        end_stats["error"] = data["message"]
                        return
                    if data["type"] == "end":
                        end_stats.update(data)
                        return

        await asyncio.gather(send(), receive())
    if not latencies:
        return {"frames": 0, "error": end_stats.get("error")}
    lat = np.array(latencies)
    return {
        "frames": len(lat),
        "frames_per_s": round(len(lat) / seconds, 1),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
        "ready_to_arrival_p50_ms": round(1000 * float(np.percentile(delivery, 50)), 1),
        "worker_hop_p50_ms": end_stats.get("worker_hop_ms"),
        "jpeg_kb_mean": round(float(np.mean(sizes)) / 1024, 1),
        "dropped_by_server": end_stats.get("dropped"),
        "error": end_stats.get("error"),
    }


def _memory_mb(pid: int) -> dict:
    """Resident and peak resident memory of a process, MB (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


def _replica_pids() -> list[int]:
    """The Ray Serve render replicas on this machine (Ray names their processes after the deployment)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(REPLICA_TITLE):
                pids.append(int(proc.name))
    return sorted(pids)


def _start(args: Args, mode: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cap = max(args.streams)
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(args.run), "--port", str(port),
           "--size", str(args.size), "--rate-burst", "1000"]  # fmt: skip
    if mode == "ray":
        cap = math.ceil(cap / args.replicas)
        cmd += ["--ray", "local", "--replicas", str(args.replicas), "--replica-cpus", str(args.replica_cpus)]
    server = subprocess.Popen([*cmd, "--max-sessions", str(cap)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    line = server.stdout.readline()
    if "gstalk serve:" not in line:
        server.kill()
        raise SystemExit(f"gstalk serve ({mode}) did not start: {line!r}")
    return server, port


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)  # as Ctrl-C: the server stops its workers (and Ray) first
    try:
        server.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def run_mode(args: Args, mode: str, speech: np.ndarray) -> list[dict]:
    server, port = _start(args, mode)
    rows = []
    try:
        url = f"http://127.0.0.1:{port}/ws"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/avatars") as r:
            avatar = json.load(r)["avatars"][0]
        for count in args.streams:

            async def together(count=count):
                clients = [_stream(url, avatar, speech, args.seconds) for _ in range(count)]
                return await asyncio.gather(*clients)

            streams = asyncio.run(together())
            row = {"mode": mode, "streams": count, "per_stream": streams, "front_end": _memory_mb(server.pid)}
            if mode == "ray":
                row["replicas"] = [{"pid": pid, **_memory_mb(pid)} for pid in _replica_pids()]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            time.sleep(2.0)  # the sessions' ends reach every worker before the next count
    finally:
        _stop(server)
    return rows


def _median(rows: list[dict], key: str) -> float | None:
    values = [s[key] for r in rows for s in r["per_stream"] if s.get(key) is not None]
    return float(np.median(values)) if values else None


def compare(rows: list[dict]) -> list[dict]:
    """Per stream count: Ray's hop and latency minus the single process's (ms)."""
    out = []
    for count in sorted({r["streams"] for r in rows}):
        by_mode = {r["mode"]: [r] for r in rows if r["streams"] == count}
        if {"single", "ray"} <= by_mode.keys():
            hop = [_median(by_mode[m], "worker_hop_p50_ms") for m in ("ray", "single")]
            lat = [_median(by_mode[m], "latency_p50_s") for m in ("ray", "single")]
            out.append({
                "streams": count,
                "ray_overhead_per_frame_ms": None if None in hop else round(hop[0] - hop[1], 2),
                "latency_p50_difference_ms": None if None in lat else round(1000 * (lat[0] - lat[1]), 1),
            })  # fmt: skip
    return out


def _speech(path: Path, seconds: float) -> tuple[np.ndarray, str]:
    if path.is_file():
        import librosa

        speech, source = librosa.load(str(path), sr=16_000, mono=True)[0].astype(np.float32), str(path)
    else:
        from gstalk.demo import speech_like_audio

        speech, source = speech_like_audio(60.0, seed=1).audio.astype(np.float32), "generated speech-like"
    return np.tile(speech, int(np.ceil(seconds * 16_000 / len(speech)))), source


def main(args: Args) -> dict:
    from gstalk.bench import hardware

    speech, source = _speech(args.audio, args.seconds)
    rows = [row for mode in args.modes for row in run_mode(args, mode, speech)]
    result = {"benchmark": "serve_load", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
              "run": str(args.run), "size": args.size, "seconds": args.seconds, "audio": source,
              "replicas": args.replicas, "replica_cpus": args.replica_cpus, "results": rows,
              "ray_vs_single": compare(rows)}  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
