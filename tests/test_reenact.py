"""Video-driven reenactment (render --drive-video, --drive-pose), a face lost for a while, and the evaluation
against a reference video (evaluate --reference-video), on the generated subject; and their maths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gstalk.config import AudioMotionConfig, EvaluateConfig, RenderConfig, TrainConfig
from gstalk.data.dataset import load_dataset
from gstalk.demo import make_demo_subject, speech_like_audio
from gstalk.drive import Driver, PoseSource, render_video
from gstalk.drive.reenact import Reenactment, ReenactStream, track_driving_video
from gstalk.errors import GstalkError
from gstalk.eval.evaluate import evaluate
from gstalk.eval.reference import aligned_camera, reference_ids
from gstalk.face.landmarks import LIPS_OUTER, STABLE
from gstalk.face.mesh import N_MESH, mouth_gap
from gstalk.face.transfer import (
    EASE_FRAMES,
    Similarity,
    align_heads,
    driven_motion,
    hold_and_ease,
    neutral_face,
    relative_motion,
    transfer_expression,
)
from gstalk.media import probe_video, read_audio, read_frames
from gstalk.media.encode import write_video
from gstalk.train import train

from .pages import wait_until

FPS = 25.0


# --- the maths --------------------------------------------------------------------------------------
def _similarity(seed: int, scale: float = 1.0) -> Similarity:
    rng = np.random.default_rng(seed)
    rot = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix()
    return Similarity(scale, rot, rng.normal(0, 0.05, 3))


def _face(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.05, (478, 3))


def test_align_heads_recovers_a_similarity_and_conjugates_motion():
    source = _face()
    truth = _similarity(1, scale=1.1)
    found = align_heads(source, truth.points(source))
    assert found.scale == pytest.approx(1.1, rel=1e-9)
    assert np.allclose(found.rotation, truth.rotation) and np.allclose(found.translation, truth.translation)
    # a motion of the source, carried over, moves the target's points as it moves the source's
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix()
    motion[:3, 3] = [0.01, 0.02, -0.03]
    carried = truth.conjugate(motion)
    moved_source = source @ motion[:3, :3].T + motion[:3, 3]
    moved_target = truth.points(source) @ carried[:3, :3].T + carried[:3, 3]
    assert np.allclose(moved_target, truth.points(moved_source))
    assert np.allclose(carried[:3, :3] @ carried[:3, :3].T, np.eye(3))  # still rigid


def test_transfer_moves_the_target_neutral_by_the_source_displacement_in_its_own_axes():
    source_neutral, target_neutral = _face(0)[:N_MESH], _face(1)[:N_MESH]
    rng = np.random.default_rng(2)
    displacement = rng.normal(0, 0.002, (5, N_MESH, 3))
    same = Similarity(1.0, np.eye(3), np.zeros(3))
    out = transfer_expression(source_neutral + displacement, source_neutral, target_neutral, same)
    assert np.allclose(out, target_neutral + displacement, atol=1e-6)
    turned = _similarity(3, scale=0.9)
    out = transfer_expression(source_neutral + displacement, source_neutral, target_neutral, turned)
    assert np.allclose(out - target_neutral, 0.9 * displacement @ turned.rotation.T, atol=1e-6)


def test_neutral_takes_the_upper_face_median_and_the_lower_face_at_rest():
    base = np.zeros((40, N_MESH, 3))
    base[:] = np.random.default_rng(4).normal(0, 0.04, (N_MESH, 3))
    base[:, 1, 1] = -0.01  # the nose tip (y down) above the lips, which are all lower face
    base[:, LIPS_OUTER, 1] = 0.015
    base[:, 13, 1] = 0.02
    base[:, 14] = base[:, 13]  # the inner lips' middle, closed
    opening = np.r_[np.zeros(4), np.full(36, 0.01)]  # the mouth open in 90% of the frames
    base[:, 14, 1] += opening
    neutral = neutral_face(base, np.ones(40, bool))
    assert mouth_gap(neutral) == pytest.approx(0.0, abs=1e-9)  # at rest, not the median (open) mouth
    with pytest.raises(ValueError):
        neutral_face(base, np.zeros(40, bool))


def test_hold_and_ease_holds_a_lost_face_and_eases_back():
    t = np.arange(60, dtype=np.float64)
    values = np.stack([np.sin(t / 5), t / 10], 1)
    valid = np.ones(60, bool)
    valid[:3] = False  # lost at the start: the first tracked value, nothing to jump from
    valid[20:35] = False
    out = hold_and_ease(values, valid)
    assert np.array_equal(out[:3], np.repeat(values[3:4], 3, 0))
    assert np.array_equal(out[20:35], np.repeat(out[19:20], 15, 0))  # held
    jump = np.abs(values[35] - out[34])
    steps = np.abs(np.diff(out[34 : 36 + EASE_FRAMES], axis=0))
    assert (steps[0] < 0.2 * jump).all()  # eased, not jumped
    assert np.array_equal(out[35 + EASE_FRAMES :], values[35 + EASE_FRAMES :])
    assert np.array_equal(out[3:20], values[3:20])
    with pytest.raises(ValueError):
        hold_and_ease(values, np.zeros(60, bool))


def test_driven_motion_is_the_source_head_motion_seen_by_the_target():
    rng = np.random.default_rng(5)
    n = 30
    mean = np.eye(4)
    mean[:3, :3] = Rotation.from_rotvec([0.05, 0.1, 0.0]).as_matrix()
    mean[:3, 3] = [0.0, 0.02, 0.9]
    motions = np.tile(np.eye(4), (n, 1, 1))
    motions[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.1, (n, 3))).as_matrix()
    motions[:, :3, 3] = rng.normal(0, 0.01, (n, 3))
    world_to_cam = mean @ motions
    valid = np.ones(n, bool)
    relative = relative_motion(world_to_cam, valid)
    # the source's own cameras: its mean pose moved by each relative motion gives each frame's camera back
    rots = Rotation.from_matrix(world_to_cam[:, :3, :3])
    w_mean = np.eye(4)
    w_mean[:3, :3], w_mean[:3, 3] = rots.mean().as_matrix(), world_to_cam[:, :3, 3].mean(0)
    to_target = Similarity(1.0, Rotation.from_rotvec([0.0, 0.3, 0.1]).as_matrix(), np.array([0.01, 0, 0]))
    carried = driven_motion(world_to_cam, valid, to_target, smoothing=0)
    # a target camera that sees the target as the mean camera sees the source sees each frame as the
    # source's camera of that frame does
    inverse = np.eye(4)
    inverse[:3, :3], inverse[:3, 3] = to_target.rotation.T, -to_target.rotation.T @ to_target.translation
    w_target = w_mean @ inverse
    source = _face(6)
    for k in (0, 7, 29):
        seen = (w_target @ carried[k])[:3] @ np.c_[to_target.points(source), np.ones(478)].T
        truth = world_to_cam[k, :3] @ np.c_[source, np.ones(478)].T
        assert np.allclose(seen, truth, atol=1e-9)
    assert relative.shape == (n, 6)


def test_aligned_camera_projects_the_avatar_where_the_clip_camera_projects_the_clip():
    avatar = _face(7)
    avatar_to_clip = _similarity(8, scale=1.2)
    w = np.eye(4)
    w[:3, :3] = Rotation.from_rotvec([0.1, 0.2, 0.0]).as_matrix()
    w[:3, 3] = [0.02, -0.01, 0.8]

    def project(cam, points):
        p = points @ cam[:3, :3].T + cam[:3, 3]
        return p[:, :2] / p[:, 2:]

    camera = aligned_camera(w, avatar_to_clip)
    assert np.allclose(project(camera, avatar), project(w, avatar_to_clip.points(avatar)))
    assert np.allclose(camera[:3, :3] @ camera[:3, :3].T, np.eye(3))


# --- end to end on the generated subject ---------------------------------------------------------------
@pytest.fixture(scope="module")
def run(demo_dataset: Path, tmp_path_factory) -> Path:
    """A briefly trained model of the generated subject (enough to drive; not a quality test)."""
    out = tmp_path_factory.mktemp("runs") / "astronaut"
    return train(
        TrainConfig(
            dataset=demo_dataset,
            out=out,
            size=64,
            max_gaussians=800,
            iterations=(40, 60, 10),
            progress=False,
            audio_motion=AudioMotionConfig(steps=150, augmented_copies=1),
        )
    )


@pytest.fixture(scope="module")
def driver_clip(tmp_path_factory) -> Path:
    """3 s of the generated subject saying something else (another seed: other syllables, blinks)."""
    return make_demo_subject(tmp_path_factory.mktemp("drive") / "driver.mp4", seconds=3.0, seed=11)


@pytest.fixture(scope="module")
def lost_clip(driver_clip: Path, tmp_path_factory) -> Path:
    """The driving clip with its face gone for 0.8 s (frames 30–49 grey), with its sound."""
    frames = [rgb for _, rgb in read_frames(driver_clip, FPS)]
    for k in range(30, 50):
        frames[k] = np.full_like(frames[k], 128)
    path = tmp_path_factory.mktemp("drive") / "lost.mp4"
    write_video(path, frames, FPS, read_audio(driver_clip), 16_000)
    return path


def test_render_follows_the_driving_face_with_its_sound(run: Path, driver_clip: Path, tmp_path: Path):
    out = tmp_path / "driven.mp4"
    figures = render_video(RenderConfig(run=run, drive_video=driver_clip, out=out, progress=False))
    info = probe_video(out)
    assert figures["frames"] == 75 and abs(info.duration - 3.0) < 0.1 and info.has_audio
    assert figures["face_found_share"] == 1.0
    sound, back = read_audio(driver_clip), read_audio(out)
    n = min(len(sound), len(back), 40_000)
    assert np.corrcoef(np.abs(sound[:n]), np.abs(back[:n]))[0, 1] > 0.5  # the driving clip's sound, muxed
    assert (tmp_path / "driven.config.json").is_file()
    # the avatar's mouth opens and closes with the driver's: the transferred mesh, and the rendered pixels
    driver = Driver(run)
    face = track_driving_video(driver_clip, FPS)
    reenact = Reenactment(driver, face, pose=PoseSource("still", 5))
    gap_driver = mouth_gap(face.meshes)
    gap_avatar = mouth_gap(np.stack([reenact.mesh(k) for k in range(len(reenact))]))
    assert np.corrcoef(gap_driver, gap_avatar)[0, 1] > 0.95
    frames = list(reenact.frames())
    shut, wide = int(np.argmin(gap_driver)), int(np.argmax(gap_driver))
    lower = slice(int(0.55 * driver.size), int(0.8 * driver.size))
    upper = slice(0, int(0.2 * driver.size))

    def diff(region):
        return np.abs(frames[shut][region].astype(int) - frames[wide][region].astype(int)).mean()

    assert diff(lower) > 3 * max(diff(upper), 0.1)  # the mouth moved, the still frame did not


def test_drive_pose_turns_the_avatar_with_the_driving_head(run: Path, driver_clip: Path, tmp_path: Path):
    driver = Driver(run)
    face = track_driving_video(driver_clip, FPS, with_pose=True)
    reenact = Reenactment(driver, face, drive_pose=True)
    assert reenact.pose.mode == "still"
    # the generated subject rolls its head by a known angle (demo.subject): the driven roll follows it
    t = np.arange(len(face)) / FPS
    angle = 1.5 * np.sin(2 * np.pi * 0.23 * t) + 0.8 * np.sin(2 * np.pi * 0.61 * t + 1.0)
    roll = Rotation.from_matrix(reenact.motion.cpu().numpy()[:, :3, :3].astype(np.float64)).as_rotvec()[:, 2]
    assert abs(np.corrcoef(roll, angle)[0, 1]) > 0.9
    assert np.degrees(np.ptp(roll)) == pytest.approx(np.ptp(angle), rel=0.35)
    out = tmp_path / "posed.mp4"
    figures = render_video(
        RenderConfig(run=run, drive_video=driver_clip, drive_pose=True, out=out, size=48, progress=False)
    )
    assert figures["frames"] == 75 and next(read_frames(out, FPS))[1].shape == (48, 48, 3)


def test_a_face_lost_for_a_while_holds_the_last_motion_and_eases_back(run: Path, lost_clip: Path, capsys):
    driver = Driver(run)
    face = track_driving_video(lost_clip, FPS)
    assert not face.valid[30:50].any() and face.valid[:30].all() and face.valid[52:].all()
    back = 50 + int(np.argmax(face.valid[50:]))
    reenact = Reenactment(driver, face, pose=PoseSource("still", 5))
    frames = list(reenact.frames())
    for k in range(30, back):  # held: the frame before the face was lost, exactly
        assert np.array_equal(frames[k], frames[29])
    meshes = np.stack([reenact.mesh(k) for k in range(len(reenact))])
    tracked = transfer_expression(face.meshes, face.neutral, reenact.neutral, reenact.to_avatar)
    jump = np.abs(tracked[back] - meshes[back - 1]).max()
    step = np.abs(meshes[back] - meshes[back - 1]).max()
    assert jump > 0 and step < 0.2 * jump  # eased back, no jump
    assert np.allclose(meshes[back + EASE_FRAMES :], tracked[back + EASE_FRAMES :], atol=1e-6)
    out = lost_clip.parent / "lost_render.mp4"
    figures = render_video(RenderConfig(run=run, drive_video=lost_clip, out=out, size=48, progress=False))
    assert figures["frames"] == 75 and figures["face_found_share"] < 0.8
    said = capsys.readouterr()
    assert "the face is lost in" in said.out + said.err  # a note, or a warning past a quarter of the frames


def test_reenactment_errors(run: Path, driver_clip: Path, tmp_path: Path):
    faceless = tmp_path / "faceless.mp4"
    frames = (np.full((96, 96, 3), (30 + 5 * k) % 255, np.uint8) for k in range(30))
    write_video(faceless, frames, FPS, speech_like_audio(1.2).audio, 16_000)
    with pytest.raises(GstalkError, match="no face was found in the driving video"):
        render_video(RenderConfig(run=run, drive_video=faceless, out=tmp_path / "a.mp4", progress=False))
    with pytest.raises(GstalkError, match="one of them"):
        render_video(
            RenderConfig(run=run, audio=driver_clip, drive_video=driver_clip, out=tmp_path / "b.mp4")
        )
    with pytest.raises(GstalkError, match="one of them"):
        render_video(RenderConfig(run=run, out=tmp_path / "c.mp4"))
    with pytest.raises(GstalkError, match="longer than the limit"):
        render_video(
            RenderConfig(run=run, drive_video=driver_clip, out=tmp_path / "d.mp4", max_audio_seconds=1)
        )
    (tmp_path / "not_video.mp4").write_bytes(b"nothing")
    with pytest.raises(GstalkError, match="not a readable video"):
        render_video(RenderConfig(run=run, drive_video=tmp_path / "not_video.mp4", out=tmp_path / "e.mp4"))
    assert not list(tmp_path.glob("[a-e].mp4")) and not list(tmp_path.glob(".*.mp4*"))


def test_stream_renders_each_frame_once_its_sound_has_arrived(run: Path, driver_clip: Path):
    driver = Driver(run)
    reenact = Reenactment(driver, track_driving_video(driver_clip, FPS), pose=PoseSource("still", 5))
    stream = ReenactStream(reenact)
    offline = list(reenact.frames())
    got = list(stream.push(np.zeros(int(0.5 * 16_000), np.float32)))
    assert [k for k, _ in got] == list(range(12))  # 0.5 s of sound: frames 0–11 are under it
    got += list(stream.push(np.zeros(16_000 * 5, np.float32)))
    got += list(stream.finish())
    assert [k for k, _ in got] == list(range(75))  # no further than the driving video
    assert all(np.array_equal(image, offline[k]) for k, image in got)


def test_reference_evaluation_on_its_own_clip_reproduces_the_held_out_evaluation(run: Path, tmp_path: Path):
    held_out = evaluate(EvaluateConfig(run=run, out=tmp_path / "held_out", progress=False))
    dataset = Path(json.loads((run / "config.json").read_text())["config"]["dataset"])
    reference = evaluate(
        EvaluateConfig(
            run=run,
            out=tmp_path / "reference",
            reference_video=dataset,
            reference_frames="test",
            progress=False,
        )
    )
    assert reference["alignment"] == {"scale": 1.0, "rotation_deg": 0.0}
    assert reference["test_frames"] == held_out["test_frames"]
    for mode, theirs in (("speech", "full"), ("silence", "zero_audio")):
        for key in ("psnr", "ssim", "mouth_psnr", "lmd"):
            assert reference[mode][key] == pytest.approx(held_out[theirs][key], abs=1e-3), (mode, key)
    assert reference["speech"]["opening_correlation"] == held_out["articulation"]["opening_correlation"]
    files = {p.name for p in (tmp_path / "reference").iterdir()}
    assert files == {"metrics.json", "config.json", "mouth_sheet.png", "side_by_side.mp4", "report.html"}


@pytest.mark.slow
def test_reference_video_is_prepared_aligned_and_scored(run: Path, demo_clip: Path):
    """The avatar's own clip as a video: prepared inside the evaluation's temporary folder (and removed),
    its tail scored in the three modes, into RUN/eval-reference (beside, not over, RUN/eval)."""
    before = sorted(p.name for p in run.iterdir())
    metrics = evaluate(EvaluateConfig(run=run, reference_video=demo_clip, drive_video=True, progress=False))
    out = run / "eval-reference"
    n = load_dataset(json.loads((run / "config.json").read_text())["config"]["dataset"]).n_frames
    assert metrics["test_frames"] == round(n / 11) and metrics["frames"][1] == n - 1
    assert metrics["alignment"]["scale"] == pytest.approx(1.0, abs=0.02)
    assert metrics["alignment"]["rotation_deg"] < 1.0  # the same clip, prepared again
    for mode in ("speech", "face", "silence"):
        assert metrics[mode]["psnr"] > 25 and 0 < metrics[mode]["ssim"] <= 1
        assert metrics[mode]["lmd_frames"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "config.json", "mouth_sheet.png", "side_by_side.mp4", "report.html"]
    )
    assert sorted(p.name for p in run.iterdir()) == sorted({*before, "eval-reference"})  # nothing else left


def test_reference_frames_are_parsed(demo_dataset: Path):
    ds = load_dataset(demo_dataset)
    n = ds.n_frames
    assert reference_ids(ds, "tail").tolist() == [i for i in range(n - round(n / 11), n) if ds.valid[i]]
    assert reference_ids(ds, "10:20").tolist() == [i for i in range(10, 20) if ds.valid[i]]
    assert reference_ids(ds, "test").tolist() == ds.test_ids.tolist()
    for bad in ("last", "5", "1:2:3"):
        with pytest.raises(GstalkError, match=r"names no frames|leaves"):
            reference_ids(ds, bad)
    with pytest.raises(GstalkError, match="leaves 0 frame"):
        reference_ids(ds, "0:0")


def test_stable_points_are_mesh_vertices():
    assert max(STABLE) < N_MESH


# --- gstalk serve, with an uploaded video -----------------------------------------------------------------
def test_serve_drives_a_session_with_an_uploaded_video(run: Path, driver_clip: Path, tmp_path: Path):
    import asyncio
    import io
    import struct
    import wave

    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.config import ServeConfig
    from gstalk.serve import LocalWorker, Server

    config = ServeConfig(run=(run,), size=64, max_sessions=1, max_upload_mb=2.0, max_session_seconds=2.0)
    faceless = tmp_path / "faceless.mp4"
    frames = (np.full((96, 96, 3), 90, np.uint8) for _ in range(25))
    write_video(faceless, frames, FPS, speech_like_audio(1.0).audio, 16_000)

    async def scenario():
        server = Server(config, LocalWorker.from_config(config))
        async with TestClient(TestServer(server.app())) as client:
            # within the limits: too large, empty, not a video
            big = await client.post("/drive", data=b"\0" * 2_100_000)
            assert big.status == 413 and "2 MB" in await big.text()
            assert (await client.post("/drive", data=b"")).status == 400
            junk = await client.post("/drive", data=b"not a video at all")
            assert junk.status == 400 and "not a readable video" in await junk.text()
            # a video: its id, its length (cut to the session's), its sound on its timeline
            sent = await client.post("/drive", data=driver_clip.read_bytes())
            upload = await sent.json()
            assert sent.status == 200 and upload["seconds"] == 2.0 and upload["has_sound"]
            answer = await client.get(f"/drive/{upload['drive']}.wav")
            with wave.open(io.BytesIO(await answer.read())) as w:
                assert w.getframerate() == 16_000 and w.getnframes() == 32_000
                sound = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767
            clip_sound = read_audio(driver_clip)[:32_000]
            assert np.corrcoef(np.abs(sound), np.abs(clip_sound))[0, 1] > 0.95
            # a session driven by it: frames paced by the sound the page sends back
            ws = await client.ws_connect("/ws")
            await ws.send_json({"type": "start", "avatar": "astronaut", "drive": upload["drive"]})
            ready = await ws.receive_json(timeout=120)
            assert ready["type"] == "ready"
            for start in range(0, len(sound), 320):
                await ws.send_bytes(sound[start : start + 320].tobytes())
            await ws.send_json({"type": "end"})
            indices, end = [], None
            while end is None:
                msg = await ws.receive(timeout=60)
                if msg.type.name == "BINARY":
                    indices.append(struct.unpack("<If", msg.data[:8])[0])
                elif json.loads(msg.data)["type"] == "end":
                    end = json.loads(msg.data)
            assert indices == sorted(indices) and indices[-1] == 49 and len(indices) + end["dropped"] == 50
            await ws.close()
            # an upload is used once; a video without a face is refused with the reason
            again = await client.ws_connect("/ws")
            await again.send_json({"type": "start", "avatar": "astronaut", "drive": upload["drive"]})
            assert "upload the video again" in (await again.receive_json())["message"]
            await again.close()
            sent = await (await client.post("/drive", data=faceless.read_bytes())).json()
            lost = await client.ws_connect("/ws")
            await lost.send_json({"type": "start", "avatar": "astronaut", "drive": sent["drive"]})
            assert "no face was found" in (await lost.receive_json(timeout=60))["message"]
            await lost.close()
            assert not server.worker.sessions  # the refused session's slot is free
            assert not list(server.downloads.glob("upload-*"))  # nothing of the uploads left on disk

    asyncio.run(scenario())


def test_the_page_drives_the_avatar_with_a_dropped_video(run: Path, driver_clip: Path, tmp_path: Path):
    """The page in Chromium: a video chosen as the file is uploaded, tracked by the server and played: its
    frames come back in step with its sound, and the session ends with its mp4."""
    import os
    import subprocess
    import sys

    import soundfile

    from .test_serve import CHROMIUM, _browser, _port

    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    port = _port()
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(run), "--port", str(port), "--size", "64",
           "--pose", "still", "--still-frame", "40"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GSTALK_THREADS": "1"})  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "gstalk serve:" in line, proc.stderr.read()
        silence = tmp_path / "silence.wav"
        soundfile.write(silence, np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
        with sync_api.sync_playwright() as p:
            browser = _browser(p, silence)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            wait_until(page, "document.getElementById('avatar').options.length > 0")
            page.set_input_files("#file", str(driver_clip))
            wait_until(page, "window.gstalkStats.ended === true", timeout=90)
            stats = page.evaluate("window.gstalkStats")
            page.screenshot(path=str(tmp_path / "serve_drive.png"))
            assert stats["frames"] + stats["dropped"] >= 70 and not stats["errors"], stats
            assert "download this session" in page.inner_text("#download")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
