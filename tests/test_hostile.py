"""What a hostile visitor or a damaged file can do (issue 27), as fast cases: nothing takes the avatar from
other visitors, nothing replaces or deletes a user's file, nothing ends in a traceback.

The loads (a burst client beside a real-time one at 256² and 512², a trickle client, a flood of refused
requests) are measured by ``benchmarks/serve_abuse.py``; here each rule is checked once, on a tiny model.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from gstalk.cli import main
from gstalk.config import AudioMotionConfig, ServeConfig, TrainConfig
from gstalk.data import run_layout
from gstalk.demo import speech_like_audio
from gstalk.train.trainer import Trainer


def gstalk(capsys, *args) -> tuple[int, str]:
    """Run the command in-process; its exit code and stderr. Any exception but SystemExit fails the test
    with its traceback, which is the point: every error must be a message."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "gstalk: error:" in err and "fix:" in err and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


@pytest.fixture(scope="module")
def runs(demo_dataset: Path, tmp_path_factory) -> dict[str, Path]:
    """A tiny run stopped in its last stage (a checkpoint with optimizer and RNG state), and the same run
    finished (its model/)."""
    root = tmp_path_factory.mktemp("hostile")
    config = TrainConfig(dataset=demo_dataset, out=root / "stopped", size=64, max_gaussians=600,
                         iterations=(10, 10, 4), checkpoint_every=2, progress=False,
                         audio_motion=AudioMotionConfig(steps=40, augmented_copies=1))  # fmt: skip

    def stop(trainer, stage, step):
        if stage.name == "fusion" and step == 1:
            trainer.request_stop()

    with pytest.raises(KeyboardInterrupt):
        Trainer(config, on_step=stop).run()
    shutil.copytree(root / "stopped", root / "finished")
    import dataclasses

    Trainer(dataclasses.replace(config, out=root / "finished", resume=True)).run()
    return {"stopped": root / "stopped", "finished": root / "finished"}


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    soundfile.write(path, speech_like_audio(3.0, seed=5).audio, 16_000)
    return path


# --- files: render never replaces or deletes what it did not make -----------------------------------------
def test_render_never_replaces_a_users_video_or_config(capsys, runs, speech, tmp_path: Path):
    run = runs["finished"]
    video, config = tmp_path / "precious.mp4", tmp_path / "precious.config.json"
    video.write_bytes(b"my wedding video")
    config.write_text('{"my": "settings"}')
    for extra in ((), ("--overwrite",)):
        code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", video, "--no-progress",
                           *extra)  # fmt: skip
        refused(code, err, "precious.mp4")
    assert video.read_bytes() == b"my wedding video" and config.read_text() == '{"my": "settings"}'
    # gstalk's own video is replaced with --overwrite only; a user's config beside it is never
    ours = tmp_path / "ours.mp4"
    assert gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", ours, "--no-progress")[0] == 0
    with av.open(str(ours)) as f:
        assert f.metadata["comment"].startswith("made by gstalk render")
    refused(*gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", ours, "--no-progress"),
            "already exists", "--overwrite")  # fmt: skip
    assert gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", ours, "--no-progress",
                  "--overwrite")[0] == 0  # fmt: skip
    (tmp_path / "ours.config.json").write_text("my notes")
    before = ours.read_bytes()
    refused(*gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", ours, "--no-progress",
                    "--overwrite"), "ours.config.json", "not a config gstalk render wrote")  # fmt: skip
    assert ours.read_bytes() == before and (tmp_path / "ours.config.json").read_text() == "my notes"


def test_lock_and_temporary_names_of_a_user_are_left_alone(capsys, runs, speech, tmp_path: Path):
    run, out = runs["finished"], tmp_path / "x.mp4"
    lock = tmp_path / ".x.mp4.lock"
    lock.write_text("my shopping list")
    refused(*gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", out, "--no-progress"),
            "in the way")  # fmt: skip
    assert lock.read_text() == "my shopping list" and not out.exists()
    lock.write_text("999999999\n")  # a lock gstalk left (a PID): taken over, then removed
    users_tmp, ours_tmp = tmp_path / ".x.mp4.notes.tmp", tmp_path / ".x.mp4.gstalk-ab12cd34.tmp"
    users_tmp.write_text("mine")
    ours_tmp.write_text("left by a killed render")
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", out, "--no-progress")
    assert code == 0, err
    assert "taking over the lock" in err and "removing .x.mp4.gstalk-ab12cd34.tmp" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.mp4.notes.tmp", "x.config.json", "x.mp4"]
    assert users_tmp.read_text() == "mine"


def test_a_killed_render_leaves_nothing_behind(runs, tmp_path: Path):
    """The video is written to a file with no name until it is complete: SIGKILL mid-render leaves no
    trace in the output's folder (and an earlier video there stays as it was)."""
    audio = tmp_path / "long.wav"
    soundfile.write(audio, speech_like_audio(60.0, seed=2).audio, 16_000)
    out = tmp_path / "out" / "talk.mp4"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "gstalk", "render", "--run", str(runs["finished"]), "--audio", str(audio),
           "--out", str(out), "--no-progress", "--yes"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "frames, about" in proc.stdout.readline()  # printed just before the frames start
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # only its lock, with the dead PID in it (taken over by the next render to that name)
    assert [p.name for p in out.parent.iterdir()] == [".talk.mp4.lock"]


def test_atomic_paths_without_a_name_until_complete(tmp_path: Path):
    from gstalk.fileio import atomic_path

    with atomic_path(tmp_path / "a.bin", unnamed=True) as tmp:
        tmp.write_bytes(b"x" * 1000)
        assert list(tmp_path.iterdir()) == []  # nothing visible while it is written
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 1000
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.bin", unnamed=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_prepare_never_deletes_a_users_folder_by_its_work_name(capsys, demo_clip: Path, tmp_path: Path):
    work = tmp_path / ".me.partial"
    work.mkdir()
    (work / "diary.txt").write_text("private")
    refused(*gstalk(capsys, "prepare", "--video", demo_clip, "--out", tmp_path / "me", "--no-progress"),
            "not a gstalk work folder")  # fmt: skip
    assert (work / "diary.txt").read_text() == "private"


# --- audio: guards before work, and damaged files ---------------------------------------------------------
def _declaring_wav(path: Path, seconds_declared: float, seconds_held: float = 1.0) -> Path:
    """A 16-bit WAV whose header declares ``seconds_declared`` but which holds ``seconds_held``."""
    soundfile.write(path, speech_like_audio(seconds_held, seed=1).audio, 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", int(seconds_declared * 32_000))
    path.write_bytes(bytes(data))
    return path


def test_guards_come_before_any_work(capsys, monkeypatch, runs, speech, tmp_path: Path):
    """Refusals from the header and the scan come before the run is loaded; the --yes question before any
    speech model is loaded."""
    import gstalk.drive.driver as driver
    import gstalk.speech.whisper as whisper

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the guards")

    run, out = runs["finished"], tmp_path / "o.mp4"
    with monkeypatch.context() as m:
        m.setattr(driver, "Driver", loaded)
        long = _declaring_wav(tmp_path / "long.wav", 2000.0)
        refused(*gstalk(capsys, "render", "--run", run, "--audio", long, "--out", out), "its header says")
        silent = tmp_path / "silent.flac"
        soundfile.write(silent, np.zeros(16_000 * 30, np.float32), 16_000)
        refused(*gstalk(capsys, "render", "--run", run, "--audio", silent, "--out", out), "is silent")
        (tmp_path / "folder").mkdir()
        refused(*gstalk(capsys, "render", "--run", run, "--audio", tmp_path / "folder", "--out", out),
                "is a folder")  # fmt: skip
        nan = tmp_path / "nan.wav"
        samples = np.sin(np.arange(48_000) / 10).astype(np.float32)
        samples[100:110] = np.nan
        soundfile.write(nan, samples, 48_000, subtype="FLOAT")
        refused(*gstalk(capsys, "render", "--run", run, "--audio", nan, "--out", out),
                "10 samples that are not numbers", "48000 Hz")  # fmt: skip
        # longer than --confirm-minutes even at the fastest speed gstalk reaches: refused unloaded
        refused(*gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", out, "--confirm-minutes",
                        "0.00001", "--no-progress"), "minutes or more", "--yes")  # fmt: skip
    monkeypatch.setattr(whisper, "load_encoder", loaded)  # the timed estimate loads the run, not Whisper
    refused(*gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", out, "--confirm-minutes",
                    "0.00001", "--no-progress"), "--yes")  # fmt: skip
    assert not out.exists()


def test_truncated_audio_renders_what_decodes_with_a_warning(capsys, runs, tmp_path: Path):
    wav = _declaring_wav(tmp_path / "cut.wav", 3.0, 1.0)  # as a WAV cut off after 1 s
    mp3 = tmp_path / "cut.mp3"
    with av.open(str(tmp_path / "whole.mp3"), "w") as out:  # LAME writes the frame count in its header
        stream = out.add_stream("libmp3lame", rate=48_000, layout="mono")
        audio = np.repeat(speech_like_audio(3.0, seed=3).audio.astype(np.float32), 3)  # at 48 kHz
        for i in range(0, len(audio), 1152):
            frame = av.AudioFrame.from_ndarray(audio[None, i : i + 1152].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48_000, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = (tmp_path / "whole.mp3").read_bytes()
    mp3.write_bytes(data[: len(data) // 2])
    for path in (wav, mp3):
        code, err = gstalk(capsys, "render", "--run", runs["finished"], "--audio", path, "--out",
                           tmp_path / f"{path.suffix[1:]}.mp4", "--no-progress")  # fmt: skip
        assert code == 0 and "warning" in err and "truncated" in err, err
        with av.open(str(tmp_path / f"{path.suffix[1:]}.mp4")) as f:
            assert 20 <= f.streams.video[0].frames <= 45  # about the second and a half that decodes


# --- damaged datasets and runs: a message naming the file, never a traceback -------------------------------
DAMAGES = ("truncated", "flipped", "wrong type")


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        flipped = bytearray(data)
        for i in range(len(data) // 3, min(len(data), len(data) // 3 + 64)):
            flipped[i] ^= 0xFF
        path.write_bytes(bytes(flipped))
    else:  # another kind of file under this name
        path.write_bytes(
            b'{"a": "json file"}' if path.suffix in (".png", ".jpg") else b"\x89PNG\r\n\x1a\n" + bytes(64)
        )


def _outcome(capsys, *args) -> tuple[int, str]:
    code, err = gstalk(capsys, *args)
    assert code in (0, 2) and "Traceback" not in err, (args, code, err)
    if code == 2:
        assert "fix:" in err, err
    return code, err


@pytest.mark.slow
def test_every_damaged_dataset_and_run_file_gets_a_message(capsys, demo_dataset, runs, tmp_path: Path):
    """Each file of a dataset and of a run, truncated, with bytes flipped, or replaced by another kind of
    file, through the commands that read it: a message (exit 2) or a working command (exit 0), never a
    traceback; a damaged array or weight file is named."""
    audio = tmp_path / "a.wav"
    soundfile.write(audio, speech_like_audio(0.6, seed=1).audio, 16_000)
    dataset_files = sorted(p.relative_to(demo_dataset) for p in demo_dataset.rglob("*") if p.is_file()
                           and (p.parent == demo_dataset or p.stem == "000000"))  # fmt: skip
    named = {"tracks.npz", "audio_features.npy", "manifest.json"}
    for rel in dataset_files:
        for how in DAMAGES:
            ds = tmp_path / "ds"
            shutil.rmtree(ds, ignore_errors=True)
            shutil.copytree(demo_dataset, ds)
            _damage(ds / rel, how)
            code, err = _outcome(capsys, "check", "--dataset", ds)
            if str(rel) in named and (how != "flipped" or rel.suffix != ".npy"):  # flipped data may load
                assert code == 2 and str(rel) in err, (rel, how, err)
            _outcome(capsys, "render", "--run", runs["finished"], "--dataset", ds, "--audio", audio, "--out",
                     tmp_path / "o.mp4", "--no-progress", "--overwrite")  # fmt: skip
    for kind in ("stopped", "finished"):
        source = runs[kind]
        for rel in sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file()):
            for how in DAMAGES:
                run = tmp_path / "run"
                shutil.rmtree(run, ignore_errors=True)
                shutil.copytree(source, run)
                _damage(run / rel, how)
                if kind == "finished":
                    code, err = _outcome(capsys, "render", "--run", run, "--audio", audio, "--out",
                                         tmp_path / "o.mp4", "--no-progress", "--overwrite")  # fmt: skip
                    if rel.parts[0] == run_layout.MODEL:
                        assert code == 2 and str(run / rel.parent) in err, (rel, how, err)
                code, err = _outcome(capsys, "train", "--dataset", demo_dataset, "--out", run, "--resume",
                                     "--size", "64", "--max-gaussians", "600", "--iterations", "10", "10",
                                     "4", "--no-progress")  # fmt: skip
                checked = rel.name in (run_layout.META_FILE, run_layout.MODEL_FILE)  # checksummed, or JSON
                if rel.parts[0] == run_layout.CHECKPOINTS and checked and kind == "stopped":
                    assert code == 2 and str(run / rel.parent) in err, (rel, how, err)


def test_damaged_tracks_name_the_file(tmp_path: Path, demo_dataset: Path):
    from gstalk.data.layout import TRACKS
    from gstalk.data.tracks import Tracks
    from gstalk.errors import GstalkError

    path = tmp_path / TRACKS
    for how in DAMAGES:
        shutil.copyfile(demo_dataset / TRACKS, path)
        _damage(path, how)
        with pytest.raises(GstalkError, match=re.escape(str(path))):
            Tracks.load(path, 100)


# --- serve: one visitor cannot take the avatar from the others --------------------------------------------
async def _ready(client, **headers):
    ws = await client.ws_connect("/ws", headers=headers)
    await ws.send_json({"type": "start", "avatar": "avatar"})
    return ws, await ws.receive_json(timeout=30)


def _serve(runs: dict[str, Path], **options):
    from gstalk.serve import LocalWorker, Server
    from gstalk.serve.access import access_for

    run = runs["finished"].parent / "avatar"
    if not run.exists():
        shutil.copytree(runs["finished"], run)
    config = ServeConfig(run=(run,), size=64, **options)
    return Server(config, LocalWorker.from_config(config), access_for(config)[0])


def test_a_burst_client_neither_starves_a_realtime_one_nor_gets_ahead_of_real_time(runs, monkeypatch):
    """Client B sends 8 s of audio at once; client A speaks in real time. A gets every frame (delivered or
    counted as dropped) and its end; B is told its oldest audio was dropped (more than 2 s waited), its
    first frames are those of its newest audio, and it never gets frames ahead of its real-time clock
    (plus the 0.5 s lead). Features are computed on the speech thread only, frames on the render thread."""
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.drive.driver import Driver
    from gstalk.speech.kind import FeatureKind, WindowedKind
    from gstalk.speech.whisper import WhisperKind

    server = _serve(runs, max_sessions=2, max_queue_seconds=2.0)
    threads = {"features": set(), "frames": set()}
    render = Driver.render_frame

    def spy(kind, fn):
        def wrapped(*args, **kwargs):
            threads[kind].add(threading.current_thread().name)
            return fn(*args, **kwargs)

        return wrapped

    for kind in (FeatureKind, WindowedKind, WhisperKind):  # every kind's own compute_range
        if "compute_range" in vars(kind):
            monkeypatch.setattr(kind, "compute_range", spy("features", vars(kind)["compute_range"]))
    monkeypatch.setattr(Driver, "render_frame", spy("frames", render))
    speech = speech_like_audio(8.0, seed=6).audio.astype(np.float32)

    async def scenario():
        async with TestClient(TestServer(server.app())) as client:
            (a, ready_a), (b, ready_b) = await _ready(client), await _ready(client)
            assert ready_a["type"] == ready_b["type"] == "ready"
            b_log: dict = {"frames": [], "notices": []}

            async def burst():
                started = time.monotonic()
                for start in range(0, len(speech), 16_000):  # 8 messages of 1 s, at once
                    await b.send_bytes(speech[start : start + 16_000].tobytes())
                async for msg in b:
                    if msg.type.name == "BINARY":
                        b_log["frames"].append(
                            (time.monotonic() - started, struct.unpack("<I", msg.data[:4])[0])
                        )
                    elif json.loads(msg.data)["type"] == "notice":
                        b_log["notices"].append(json.loads(msg.data)["message"])

            async def realtime():
                frames, end = [], None
                receiver = asyncio.create_task(_collect(a, frames))
                for start in range(0, 3 * 16_000, 1600):
                    await a.send_bytes(speech[start : start + 1600].tobytes())
                    await asyncio.sleep(0.1)
                await a.send_json({"type": "end"})
                end = await asyncio.wait_for(receiver, 60)
                return frames, end

            task_b = asyncio.create_task(burst())
            frames_a, end_a = await realtime()
            await b.close()
            await asyncio.wait_for(task_b, 30)
            return frames_a, end_a, b_log

    frames_a, end_a, b_log = asyncio.run(scenario())
    assert end_a["type"] == "end" and len(frames_a) + end_a["dropped"] == 75, (len(frames_a), end_a)
    assert b_log["notices"] and "faster than real time" in b_log["notices"][0]
    assert b_log["frames"], "the burst client got no frames"
    indices = [k for _, k in b_log["frames"]]
    assert max(np.diff(indices, prepend=0)) >= 100  # about 6 s of its oldest audio dropped: frames skipped
    # frame k is due k / 25 s after its first audio, less the 6 s dropped; none comes more than the 0.5 s
    # lead early (without pacing, all 200 would come within a second)
    assert all(k <= 25 * (t + 6.0 + 0.5) + 3 for t, k in b_log["frames"]), b_log["frames"]
    assert threads["features"] == {"gstalk-speech"} and threads["frames"] == {"gstalk-render"}, threads


async def _collect(ws, frames: list) -> dict:
    """Frame indices into ``frames`` until the session's end message, which is returned."""
    async for msg in ws:
        if msg.type.name == "BINARY":
            frames.append(struct.unpack("<I", msg.data[:4])[0])
        elif json.loads(msg.data)["type"] == "end":
            return json.loads(msg.data)
    return {"type": "closed"}


def test_a_trickling_client_loses_its_slot_to_a_waiting_visitor(runs):
    from aiohttp.test_utils import TestClient, TestServer

    server = _serve(runs, max_sessions=1, audio_grace_seconds=1.0, min_audio_rate=0.5)

    async def scenario():
        async with TestClient(TestServer(server.app())) as client:
            trickler, ready = await _ready(client)
            assert ready["type"] == "ready"
            waiting, busy = await _ready(client)
            assert "busy" in busy["message"]
            await waiting.close()
            message = None
            for _ in range(100):  # one sample every 0.1 s: 1/1600 of real time
                await trickler.send_bytes(np.zeros(1, np.float32).tobytes())
                try:
                    msg = await trickler.receive(timeout=0.1)
                except TimeoutError:
                    continue
                if msg.type.name == "TEXT" and json.loads(msg.data)["type"] == "error":
                    message = json.loads(msg.data)["message"]
                    break
            assert message is not None and "audio" in message and "others" in message, message
            assert (await trickler.receive(timeout=10)).type.name in ("CLOSE", "CLOSING", "CLOSED")
            for _ in range(50):  # the freed slot goes to the next visitor
                waiting, ready = await _ready(client)
                if ready["type"] == "ready":
                    break
                await waiting.close()
                await asyncio.sleep(0.1)
            assert ready["type"] == "ready", ready
            await waiting.close()

    asyncio.run(scenario())


def test_a_session_ends_at_its_time_limit_and_keeps_its_download(runs):
    from aiohttp.test_utils import TestClient, TestServer

    server = _serve(runs, max_session_minutes=1.5 / 60)
    speech = speech_like_audio(5.0, seed=2).audio.astype(np.float32)

    async def scenario():
        async with TestClient(TestServer(server.app())) as client:
            ws, ready = await _ready(client)
            assert ready["type"] == "ready"
            messages = []

            async def listen():
                async for msg in ws:
                    if msg.type.name == "TEXT" and json.loads(msg.data)["type"] != "stats":
                        messages.append(json.loads(msg.data))

            listener = asyncio.create_task(listen())
            for start in range(0, len(speech), 1600):
                if ws.closed or any(m["type"] == "limit" for m in messages):
                    break
                await ws.send_bytes(speech[start : start + 1600].tobytes())
                await asyncio.sleep(0.1)
            await asyncio.wait_for(listener, 30)  # the server closes after the end
            kinds = [m["type"] for m in messages]
            assert "limit" in kinds and kinds[-1] == "end", messages
            assert "min limit" in messages[kinds.index("limit")]["message"]
            assert (await client.get(messages[-1]["download"])).status == 200

    asyncio.run(scenario())


def test_websocket_text_is_bounded_before_it_is_parsed(runs):
    from aiohttp.test_utils import TestClient, TestServer

    server = _serve(runs)

    async def scenario():
        async with TestClient(TestServer(server.app())) as client:
            ws = await client.ws_connect("/ws")
            cases = {"[" * 3000: "nested", '{"type": "' + "x" * 5000 + '"}': "characters",
                     '"start"': "objects", '{"type": ': "JSON", "[[[[[[1]]]]]]": "nested"}  # fmt: skip
            for text, word in cases.items():
                await ws.send_str(text)
                answer = await ws.receive_json(timeout=10)
                assert answer["type"] == "error" and word in answer["message"], (text[:20], answer)
            await ws.send_json({"type": "start", "avatar": "avatar"})  # the connection is still good
            assert (await ws.receive_json(timeout=30))["type"] == "ready"
            await ws.close()

    asyncio.run(scenario())


def test_refused_requests_never_use_up_a_valid_clients_rate(runs):
    from aiohttp.test_utils import TestClient, TestServer

    server = _serve(runs, rate_burst=5, rate_per_minute=1.0)

    async def scenario():
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            bad = [(await client.get("/avatars", headers={"Host": "evil.example"})).status for _ in range(12)]
            bad += [(await client.get("/avatars", headers={"Origin": "http://evil.example"})).status]
            assert bad == [403] * 5 + [429] * 8  # refused requests: a bucket of their own
            good = [(await client.get("/avatars")).status for _ in range(6)]
            assert good == [200] * 5 + [429]  # the valid bucket was untouched by the refused ones

    asyncio.run(scenario())


def test_every_response_forbids_framing_and_names_no_version(runs, caplog):
    from aiohttp.test_utils import TestClient, TestServer

    server = _serve(runs)

    async def scenario():
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            page = await client.get("/")
            html = await page.text()
            policy = page.headers["Content-Security-Policy"]
            script = re.search(r"<script>(.*?)</script>", html, re.DOTALL).group(1)
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy and "default-src 'none'" in policy
            assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
            for response in (
                page,
                await client.get("/nowhere"),
                await client.get("/", headers={"Host": "x.y"}),
            ):
                assert response.headers["X-Frame-Options"] == "DENY", response.status
                assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
                assert response.headers["Server"] == "gstalk"
            reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: nonsense\r\n\r\n")
            await writer.drain()
            raw = (await reader.read(4096)).decode(errors="replace")
            writer.close()
            assert raw.startswith("HTTP/1.") and " 400 " in raw and "aiohttp" not in raw.lower(), raw[:300]
            assert "Server: gstalk" in raw

    asyncio.run(scenario())
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert logged and all(r.exc_info is None for r in logged)  # one line each, no traceback
