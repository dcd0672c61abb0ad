"""`gstalk serve`: the WebSocket protocol in-process, and the page in a real (headless) Chromium.

The browser tests use Debian's Chromium (``/usr/bin/chromium``) driven by Playwright, with Chromium's fake
microphone playing a speech file; they skip with the reason when either is missing. A screenshot of the
page is kept in the test's tmp folder.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gstalk.config import AudioMotionConfig, ServeConfig, TrainConfig
from gstalk.demo import speech_like_audio
from gstalk.train import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(demo_dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "avatar"
    return train(
        TrainConfig(
            dataset=demo_dataset, out=out, size=64, max_gaussians=800, iterations=(40, 80, 10),
            progress=False, audio_motion=AudioMotionConfig(steps=300, augmented_copies=1),
        )
    )  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the protocol, in-process -----------------------------------------------------------------------------
def test_a_session_streams_frames_for_its_audio_and_offers_the_mp4(run: Path, tmp_path: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server

    config = ServeConfig(run=(run,), size=64, max_sessions=1, max_session_seconds=2.0)
    speech = speech_like_audio(3.0, seed=4).audio

    async def scenario():
        server = Server(config, LocalWorker.from_config(config))
        async with TestClient(TestServer(server.app())) as client:
            info = await (await client.get("/avatars")).json()
            assert info["avatars"] == ["avatar"] and info["size"] == 64
            ws = await client.ws_connect("/ws")
            await ws.send_json({"type": "start", "avatar": "nobody"})
            assert (await ws.receive_json())["type"] == "error"
            await ws.send_json({"type": "start", "avatar": "avatar"})
            ready = await ws.receive_json()
            assert ready["type"] == "ready" and ready["lookahead"] > 0
            busy = await client.ws_connect("/ws")  # one session at a time here
            await busy.send_json({"type": "start", "avatar": "avatar"})
            assert "busy" in (await busy.receive_json())["message"]
            await busy.close()
            for start in range(0, len(speech), 320):  # 20 ms chunks, as the page sends them
                await ws.send_bytes(speech[start : start + 320].astype(np.float32).tobytes())
            await ws.send_json({"type": "end"})
            indices, messages = [], []
            while True:
                msg = await ws.receive(timeout=60)
                if msg.type.name == "BINARY":
                    index, _ = struct.unpack("<If", msg.data[:8])
                    assert msg.data[8:10] == b"\xff\xd8"  # a JPEG
                    indices.append(index)
                else:
                    messages.append(json.loads(msg.data))
                    if messages[-1]["type"] == "end":
                        break
            assert any(m["type"] == "limit" for m in messages)  # 3 s sent, 2 s allowed
            end = messages[-1]
            # 2 s at 25 fps: every frame was delivered, or dropped (late, or not taken in time) and counted
            assert indices == sorted(indices) and indices[-1] == 49
            assert len(indices) + end["dropped"] == 50
            first = indices[0]
            video = await client.get(end["download"])
            assert video.status == 200
            path = tmp_path / "session.mp4"
            path.write_bytes(await video.read())
            assert (await client.get("/download/not-a-session")).status == 404
            await ws.close()
        import av

        with av.open(str(path)) as f:
            assert 50 - first <= f.streams.video[0].frames <= 50 and f.streams.audio  # in step with the audio

    asyncio.run(scenario())


def test_a_client_that_disconnects_frees_its_session(run: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server

    config = ServeConfig(run=(run,), size=64, max_sessions=1)

    async def scenario():
        server = Server(config, LocalWorker.from_config(config))
        async with TestClient(TestServer(server.app())) as client:
            ws = await client.ws_connect("/ws")
            await ws.send_json({"type": "start", "avatar": "avatar"})
            await ws.receive_json()
            await ws.send_bytes(speech_like_audio(1.5).audio.astype(np.float32).tobytes())
            await ws.close()  # gone mid-session
            for _ in range(50):
                if not server.live:
                    break
                await asyncio.sleep(0.1)
            assert not server.live and not server.finished
            again = await client.ws_connect("/ws")  # its slot is free again
            await again.send_json({"type": "start", "avatar": "avatar"})
            assert (await again.receive_json())["type"] == "ready"
            await again.close()

    asyncio.run(scenario())


# --- the page, in Chromium ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(run: Path, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    port = _port()
    # a still pose: the only motion on the page is what the audio drives
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(run), "--port", str(port),
           "--size", "64", "--pose", "still", "--still-frame", "40"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GSTALK_THREADS": "1"})  # fmt: skip
    line = proc.stdout.readline()
    assert "gstalk serve:" in line, proc.stderr.read()
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=20)


def _browser(playwright, wav: Path):
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
              "--no-sandbox"],
    )  # fmt: skip


MOUTH_SAMPLE = """() => {
  const c = document.getElementById('view');
  const g = c.getContext('2d');
  const d = g.getImageData(c.width * 0.3, c.height * 0.55, c.width * 0.4, c.height * 0.3).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push((d[i] + d[i + 1] + d[i + 2]) / 3);
  return out;
}"""


def _mouth_motion(page, samples: int = 24) -> float:
    """Mean change of the mouth region's pixels between samples 0.12 s apart."""
    frames = []
    for _ in range(samples):
        frames.append(np.array(page.evaluate(MOUTH_SAMPLE), float))
        page.wait_for_timeout(120)
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.pairwise(frames)]))


def _speak(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("document.getElementById('avatar').options.length > 0")
    page.click("#mic")
    page.wait_for_function("window.gstalkStats.frames > 25", timeout=30_000)


def test_the_page_talks_with_the_microphone(server: str, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    speech, silence = tmp_path / "speech.wav", tmp_path / "silence.wav"
    soundfile.write(speech, speech_like_audio(6.0, seed=8).audio, 16_000, subtype="PCM_16")
    soundfile.write(silence, np.zeros(6 * 16_000, np.float32), 16_000, subtype="PCM_16")
    with sync_playwright() as p:
        browser = _browser(p, silence)
        page = browser.new_page()
        _speak(page, server)
        still = _mouth_motion(page)
        browser.close()

        browser = _browser(p, speech)
        page = browser.new_page()
        _speak(page, server)
        moving = _mouth_motion(page)
        stats = page.evaluate("window.gstalkStats")
        assert stats["p95"] == stats["p95"] and 0 < stats["p95"] < 2.0, stats  # measured and reported
        assert "latency p50" in page.inner_text("#stats")
        page.screenshot(path=str(tmp_path / "serve.png"))  # artifacts of the run, beside the measures
        (tmp_path / "serve.json").write_text(
            json.dumps({"mouth_change_speech": moving, "mouth_change_silence": still, "stats": stats})
        )
        assert moving > 2 * still + 0.5, (moving, still)  # the mouth moves with speech, not with silence

        page.reload()  # the page survives a reload: a new session starts and talks
        _speak(page, server)
        page.close()  # and a disconnect frees the session
        check = browser.new_page()
        check.goto(server)
        deadline = time.time() + 10
        while (
            check.evaluate("fetch('/avatars').then(r => r.json())")["live_sessions"]
            and time.time() < deadline
        ):
            time.sleep(0.3)
        assert check.evaluate("fetch('/avatars').then(r => r.json())")["live_sessions"] == 0
        browser.close()
