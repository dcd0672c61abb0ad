"""Hostile loads on `gstalk serve` over loopback (issue 27), each bounded in time, printed as JSON.

    python benchmarks/serve_abuse.py --run RUN [--scenarios burst256 burst512 trickle flood]
                                     [--seconds 30] [--flood-seconds 100]

- ``burst256``: one client speaks in real time (20 ms chunks, as the page sends them) for ``--seconds``;
  beside it one client sends 120 s of audio at once (1 s messages, as fast as the socket takes them) and
  keeps reading. The server renders at 256².
- ``burst512``: the same at 512² with two such clients.
- For both: the real-time client's frames/s (frames received over the span from its first frame to its
  last), its longest gap between two frames, its latency as the page measures it (p50, p95), the frames it
  lost (skipped or replaced); and what each burst client got (frames, the notice). Targets: ≥ 24 frames/s
  with no gap over 0.2 s at 256² beside one burst client; ≥ 20 frames/s at 512² beside two.
- ``trickle``: ``--max-sessions 1``; a client that sends one sample every 20 s holds the slot; a second
  visitor asks for a session every second. Reports when the trickler was told (and what), and when the
  visitor got the slot. Target: within the configured limits (default grace 10 s).
- ``flood``: default rate limits; from the same address, 10 refused requests a second (a foreign
  ``Origin``, as a cross-site page would send, alternating with a foreign ``Host``, as a DNS-rebinding
  page would) for ``--flood-seconds``, while a valid client makes 100 requests, one a second. Reports how
  many valid requests were refused (target 0) and how the refused ones were answered.

Each scenario starts its own ``gstalk serve`` (this checkout, ``sys.executable -m gstalk``) and stops it.
Run it alone on the machine (under the shared CPU lock); the load average before and after is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tyro

CHUNK = 320  # 20 ms at 16 kHz, as the page sends it
RATE = 16_000


@dataclasses.dataclass
class Args:
    run: Path
    scenarios: tuple[str, ...] = ("burst256", "burst512", "trickle", "flood")
    seconds: float = 30.0
    """Audio the real-time client sends in the burst scenarios."""
    burst_seconds: float = 120.0
    """Audio each burst client sends at once."""
    flood_seconds: float = 100.0
    """Length of the flood (the valid client makes one request a second meanwhile)."""
    audio: Path = Path("../shared/data/audio/english_commentary_60s.wav")
    """Speech to send (a generated speech-like signal when the file is absent)."""


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _start(args: Args, *options: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(args.run), "--port", str(port), *options]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    line = server.stdout.readline()
    if "gstalk serve:" not in line:
        server.kill()
        raise SystemExit(f"gstalk serve did not start: {line!r} {server.stderr.read()[-2000:]}")
    return server, port


def _stop(server: subprocess.Popen) -> str:
    """Stop the server (as Ctrl-C); returns the tail of what it wrote on stderr."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    return server.stderr.read()[-4000:]


async def _session(http, url: str):
    ws = await http.ws_connect(url)
    await ws.send_json({"type": "start", "avatar": Path(ARGS.run).resolve().name})
    return ws, await ws.receive_json(timeout=60)


async def _realtime(http, url: str, speech: np.ndarray, seconds: float) -> dict:
    ws, ready = await _session(http, url)
    if ready["type"] != "ready":
        return {"error": ready.get("message")}
    fps = ready["fps"]
    arrivals, latencies, end = [], [], {}
    start = time.perf_counter()

    async def send():
        n = int(seconds * RATE)
        for k, i in enumerate(range(0, n, CHUNK)):
            await ws.send_bytes(speech[i : i + CHUNK].tobytes())
            await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK / RATE - time.perf_counter()))
        await ws.send_json({"type": "end"})

    async def receive():
        async for msg in ws:
            now = time.perf_counter() - start
            if msg.type.name == "BINARY":
                index = struct.unpack("<I", msg.data[:4])[0]
                arrivals.append(now)
                latencies.append(now - index / fps)
            elif msg.type.name == "TEXT":
                data = json.loads(msg.data)
                if data["type"] in ("end", "error"):
                    end.update(data)
                    return

    await asyncio.gather(send(), receive())
    await ws.close()
    if len(arrivals) < 2:
        return {"frames": len(arrivals), "end": end}
    gaps = np.diff(arrivals)
    span = arrivals[-1] - arrivals[0]
    return {
        "frames": len(arrivals),
        "frames_per_s": round((len(arrivals) - 1) / span, 2),
        "longest_gap_s": round(float(gaps.max()), 3),
        "gaps_over_0.2_s": int((gaps > 0.2).sum()),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3),
        "lost_frames": end.get("dropped"),
        "error": end.get("message") if end.get("type") == "error" else None,
    }


async def _burst(http, url: str, speech: np.ndarray, seconds: float, stop: asyncio.Event) -> dict:
    ws, ready = await _session(http, url)
    if ready["type"] != "ready":
        return {"error": ready.get("message")}
    audio = np.tile(speech, int(np.ceil(seconds * RATE / len(speech))))[: int(seconds * RATE)]
    sent_at = time.perf_counter()
    for i in range(0, len(audio), RATE):  # 1 s per message: the most the server takes in one
        await ws.send_bytes(audio[i : i + RATE].tobytes())
    sent = time.perf_counter() - sent_at
    frames, notices = 0, []

    async def receive():
        nonlocal frames
        async for msg in ws:
            if msg.type.name == "BINARY":
                frames += 1
            elif msg.type.name == "TEXT" and json.loads(msg.data)["type"] in ("notice", "error", "limit"):
                notices.append(json.loads(msg.data).get("message"))

    task = asyncio.create_task(receive())
    await stop.wait()
    await ws.close()
    task.cancel()
    return {"audio_s": seconds, "sent_in_s": round(sent, 3), "frames": frames, "notices": notices}


def burst(args: Args, speech: np.ndarray, size: int, bursts: int) -> dict:
    import aiohttp

    options = ("--size", str(size), "--max-sessions", str(bursts + 1), "--rate-burst", "1000")
    server, port = _start(args, *options)
    url = f"http://127.0.0.1:{port}/ws"

    async def together():
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            burst_tasks = [asyncio.create_task(_burst(http, url, speech, args.burst_seconds, stop))
                           for _ in range(bursts)]  # fmt: skip
            await asyncio.sleep(0.5)  # the bursts have arrived when the real-time client starts
            realtime = await _realtime(http, url, speech, args.seconds)
            stop.set()
            return realtime, await asyncio.gather(*burst_tasks)

    try:
        realtime, bursters = asyncio.run(together())
    finally:
        log = _stop(server)
    fps_target = 24.0 if size == 256 else 20.0
    return {
        "size": size, "burst_clients": bursts, "realtime": realtime, "bursts": bursters,
        "target": f">= {fps_target:g} frames/s" + (", no gap over 0.2 s" if size == 256 else ""),
        "met": bool(realtime.get("frames_per_s", 0) >= fps_target
                    and (size != 256 or realtime.get("longest_gap_s", 1) <= 0.2)),
        "server_traceback": "Traceback" in log,
    }  # fmt: skip


def trickle(args: Args) -> dict:
    import aiohttp

    server, port = _start(args, "--max-sessions", "1")
    url = f"http://127.0.0.1:{port}/ws"

    async def scenario():
        async with aiohttp.ClientSession() as http:
            start = time.perf_counter()
            ws, ready = await _session(http, url)
            if ready["type"] != "ready":
                return {"error": ready}
            told: dict = {}

            async def trickler():
                while not ws.closed:
                    await ws.send_bytes(np.zeros(1, np.float32).tobytes())  # 4 bytes
                    try:
                        msg = await ws.receive(timeout=20.0)
                        while msg.type.name == "TEXT" and json.loads(msg.data)["type"] == "stats":
                            msg = await ws.receive(timeout=20.0)
                    except TimeoutError:
                        continue
                    if msg.type.name == "TEXT":
                        told.update(json.loads(msg.data), at_s=round(time.perf_counter() - start, 2))
                    return

            async def visitor():
                attempts = 0
                while time.perf_counter() - start < 120:
                    attempts += 1
                    other, answer = await _session(http, url)
                    await other.close()
                    if answer["type"] == "ready":
                        return {"got_slot_at_s": round(time.perf_counter() - start, 2), "attempts": attempts}
                    await asyncio.sleep(1.0)
                return {"got_slot_at_s": None, "attempts": attempts}

            task = asyncio.create_task(trickler())
            waiting = await visitor()
            await asyncio.wait_for(task, 30)
            return {"trickler_told": told, "waiting_visitor": waiting}

    try:
        result = asyncio.run(scenario())
    finally:
        log = _stop(server)
    slot = result.get("waiting_visitor", {}).get("got_slot_at_s")
    return {**result, "limits": "defaults: --audio-grace-seconds 10, --min-audio-rate 0.5",
            "met": slot is not None and slot <= 10 + 5, "server_traceback": "Traceback" in log}  # fmt: skip


def flood(args: Args) -> dict:
    import aiohttp

    server, port = _start(args)  # default rate limits: --rate-burst 30, --rate-per-minute 60
    base = f"http://127.0.0.1:{port}"

    async def scenario():
        statuses: dict[str, dict[int, int]] = {"refused": {}, "valid": {}}
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:

            async def flooder():
                k = 0
                while not stop.is_set():
                    headers = {"Origin": "http://evil.example"} if k % 2 else {"Host": f"evil.example:{port}"}
                    async with http.get(f"{base}/avatars", headers=headers) as r:
                        statuses["refused"][r.status] = statuses["refused"].get(r.status, 0) + 1
                    k += 1
                    await asyncio.sleep(0.1)

            async def valid():
                interval = args.flood_seconds / 100
                for _ in range(100):
                    async with http.get(f"{base}/avatars", headers={"Origin": base}) as r:
                        statuses["valid"][r.status] = statuses["valid"].get(r.status, 0) + 1
                    await asyncio.sleep(interval)
                stop.set()

            await asyncio.gather(flooder(), valid())
        return statuses

    try:
        statuses = asyncio.run(scenario())
    finally:
        log = _stop(server)
    refused_valid = sum(n for status, n in statuses["valid"].items() if status != 200)
    return {"valid_requests": 100, "valid_refused": refused_valid, "valid_statuses": statuses["valid"],
            "refused_statuses": statuses["refused"], "met": refused_valid == 0,
            "server_traceback": "Traceback" in log}  # fmt: skip


def _speech(path: Path) -> tuple[np.ndarray, str]:
    if path.is_file():
        import librosa

        return librosa.load(str(path), sr=RATE, mono=True)[0].astype(np.float32), str(path)
    from gstalk.demo import speech_like_audio

    return speech_like_audio(60.0, seed=1).audio.astype(np.float32), "generated speech-like"


ARGS: Args


def main(args: Args) -> dict:
    global ARGS
    ARGS = args
    from gstalk.bench import hardware

    speech, source = _speech(args.audio)
    speech = np.tile(speech, int(np.ceil(args.seconds * RATE / len(speech))) + 1)
    result = {"benchmark": "serve_abuse", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
              "run": str(args.run), "audio": source, "loadavg_before": _loadavg(),
              "scenarios": {}}  # fmt: skip
    runs = {
        "burst256": lambda: burst(args, speech, 256, 1),
        "burst512": lambda: burst(args, speech, 512, 2),
        "trickle": lambda: trickle(args),
        "flood": lambda: flood(args),
    }
    for name in args.scenarios:
        result["scenarios"][name] = runs[name]()
        print(json.dumps({name: result["scenarios"][name]}), file=sys.stderr, flush=True)
    result["loadavg_after"] = _loadavg()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
