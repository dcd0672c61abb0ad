"""`gstalk prepare` end to end on a generated clip with known motion, and every bad-input path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gstalk.config import PrepareConfig
from gstalk.data import load_dataset
from gstalk.demo import make_demo_subject
from gstalk.errors import GstalkError
from gstalk.media.encode import write_video
from gstalk.prepare import pipeline, prepare
from gstalk.regions import Region

from .conftest import shared_file, solid_frames


def test_dataset_layout_and_manifest(demo_dataset: Path):
    ds = load_dataset(demo_dataset)
    assert ds.n_frames == 100 and ds.size == 128 and ds.fps == 25
    for name in (
        "config.json",
        "summary.json",
        "background.png",
        "audio.wav",
        "contact_sheet.png",
        "timeline.png",
    ):
        assert (demo_dataset / name).is_file(), name
    assert len(list((demo_dataset / "frames").glob("*.jpg"))) == 100
    assert len(list((demo_dataset / "regions").glob("*.png"))) == 100
    assert ds.image(0).shape == (128, 128, 3) and ds.image(0).dtype == np.uint8
    # last 1/11 held out, in order, no overlap
    assert ds.test_ids.tolist() == list(range(91, 100)) and ds.train_ids.tolist() == list(range(91))
    spec = ds.audio_spec  # the default: Whisper base's encoder states, 8 per frame (t - 20 ms ... t + 120 ms)
    assert spec.features == "whisper" and spec.whisper.model == "base"
    assert ds.audio_features.shape == (100, spec.window, spec.dim) == (100, 8, 512)
    assert ds.world_to_cam.shape == (100, 4, 4) and ds.valid.all()
    config = json.loads((demo_dataset / "config.json").read_text())
    assert config["kind"] == "PrepareConfig" and config["config"]["size"] == 128
    assert not any(p.name.endswith(".partial") for p in demo_dataset.parent.iterdir())


def test_regions_route_face_features(demo_dataset: Path):
    ds = load_dataset(demo_dataset)
    labels = np.stack([ds.regions(i) for i in range(0, 100, 5)])
    present = set(np.unique(labels).tolist())
    for region in (Region.BACKGROUND, Region.FACE, Region.EYES, Region.LIPS, Region.HAIR, Region.TORSO):
        assert region in present, region.name
    # the mouth interior appears exactly when the mouth is open
    mouth_px = np.array([(ds.regions(i) == Region.MOUTH_INTERIOR).sum() for i in range(100)])
    opening = ds.explicit("mouth_open")
    assert np.corrcoef(mouth_px, opening)[0, 1] > 0.7
    # the eyes sit above the lips, the face surrounds both
    lm = ds.tracks.landmarks2d[0]
    eye_rows = np.nonzero(ds.regions(0) == Region.EYES)[0]
    lip_rows = np.nonzero(ds.regions(0) == Region.LIPS)[0]
    assert eye_rows.mean() < lip_rows.mean()
    assert lm[:, 1].min() >= 0 and lm[:, 1].max() < 128


def test_expression_follows_the_known_mouth_motion(demo_dataset: Path, demo_clip: Path):
    """The generated clip opens the mouth with the speech envelope: mouth opening must track it."""
    from gstalk.demo.subject import mouth_opening, speech_like_audio

    ds = load_dataset(demo_dataset)
    per_frame = mouth_opening(speech_like_audio(4.0, seed=3), 25)
    assert np.corrcoef(per_frame, ds.explicit("mouth_open"))[0, 1] > 0.8
    # and the audio features carry the same envelope: a ridge probe from the frame's encoder states to the
    # opening, fitted on four fifths of the clip, predicts the held-out fifth (issue 18's probe)
    states = ds.audio_features.astype(np.float32).mean(1)
    predicted = np.zeros_like(per_frame)
    for held in np.array_split(np.arange(len(per_frame)), 5):
        fit = np.setdiff1d(np.arange(len(per_frame)), held)
        mean, std = states[fit].mean(0), states[fit].std(0) + 1e-6
        a = (states[fit] - mean) / std
        w = np.linalg.solve(
            a.T @ a + 100 * np.eye(a.shape[1]), a.T @ (per_frame[fit] - per_frame[fit].mean())
        )
        predicted[held] = (states[held] - mean) / std @ w + per_frame[fit].mean()
    assert np.corrcoef(per_frame, predicted)[0, 1] > 0.7


def test_pose_recovers_the_known_head_roll(demo_dataset: Path):
    from scipy.spatial.transform import Rotation

    ds = load_dataset(demo_dataset)
    t = np.arange(100) / 25
    roll = 1.5 * np.sin(2 * np.pi * 0.23 * t) + 0.8 * np.sin(2 * np.pi * 0.61 * t + 1.0)
    rot = Rotation.from_matrix(ds.world_to_cam[:, :3, :3].astype(np.float64))
    measured = np.degrees(rot.as_rotvec()[:, 2])
    measured -= measured.mean()
    # image rotation by +angle (counter-clockwise) is a head roll of -angle about the camera's z
    assert np.corrcoef(-roll, measured)[0, 1] > 0.9
    assert np.abs((-roll - (-roll).mean()) - measured).max() < 1.0
    summary = json.loads((demo_dataset / "summary.json").read_text())
    assert summary["pose_jitter"]["rotation_noise_deg"] < 0.5
    assert summary["reprojection_px_median"] < 1.5


def test_rerun_skips_and_resume_continues(tmp_path: Path, demo_clip: Path, monkeypatch):
    out = tmp_path / "ds"
    config = PrepareConfig(video=demo_clip, out=out, size=64, progress=False)
    calls = []
    original = dict(pipeline.STEPS)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.STEPS, "frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(config)
    assert not out.exists()
    partial = tmp_path / ".ds.partial"
    assert json.loads((partial / "steps.json").read_text())["done"].keys() == {"track", "pose"}

    def counting(name):
        def run(*args):
            calls.append(name)
            return original[name](*args)

        return run

    for name in original:
        monkeypatch.setitem(pipeline.STEPS, name, counting(name))
    prepare(config)
    assert calls == ["frames", "audio", "expression", "report"]
    assert (out / "manifest.json").is_file() and not partial.exists()
    calls.clear()
    prepare(config)  # already complete with this config: nothing runs
    assert calls == []


def _clip_with(tmp_path: Path, name: str, frames, audio: np.ndarray | None) -> Path:
    path = tmp_path / name
    write_video(path, frames, 25, audio)
    assert path.is_file()
    return path


def _speech(seconds: float) -> np.ndarray:
    from gstalk.demo import speech_like_audio

    return speech_like_audio(seconds).audio


def test_bad_inputs_name_the_problem_and_leave_nothing(tmp_path: Path, demo_clip: Path):
    def expect(video: Path, match: str, **kw):
        out = tmp_path / f"out_{video.stem}"
        with pytest.raises(GstalkError, match=match):
            prepare(PrepareConfig(video=video, out=out, size=64, progress=False, **kw))
        assert not out.exists()
        assert not list(tmp_path.glob(".out_*.partial"))

    expect(tmp_path / "nothing.mp4", "no such file")
    (tmp_path / "text.mp4").write_text("hello")
    expect(tmp_path / "text.mp4", "not a readable video")
    data = demo_clip.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    expect(tmp_path / "truncated.mp4", r"corrupt|truncated|not a readable")
    mute = _clip_with(tmp_path, "mute.mp4", solid_frames(100), None)
    expect(mute, "no audio track")
    silent = _clip_with(tmp_path, "silent.mp4", solid_frames(100), np.zeros(64000, np.float32))
    expect(silent, "silent")
    faceless = _clip_with(tmp_path, "faceless.mp4", solid_frames(100), _speech(4))
    expect(faceless, "no face")
    short = _clip_with(tmp_path, "short.mp4", solid_frames(25), _speech(1))
    expect(short, "at least 3 s")


def test_face_lost_for_long_stretches(tmp_path: Path, demo_clip: Path):
    from gstalk.media import read_frames

    frames = [f for _, f in read_frames(demo_clip, 25)]
    gap = [np.full_like(frames[0], 128)] * 100  # 4 s without a face
    video = _clip_with(tmp_path, "gap.mp4", iter(frames[:50] + gap + frames[50:]), _speech(8))
    with pytest.raises(GstalkError, match=r"face is lost in .* \(longest stretch 4\.0 s"):
        prepare(PrepareConfig(video=video, out=tmp_path / "o", size=64, progress=False))


def test_several_faces_follow_one_subject_and_warn(tmp_path: Path, demo_clip: Path):
    from gstalk.media import read_frames

    frames = []
    for _, f in read_frames(demo_clip, 25):
        small = cv2.resize(f, (256, 256))
        pair = np.concatenate([small, cv2.resize(f, (256, 256))[:, ::-1]], 1)  # two people side by side
        frames.append(np.ascontiguousarray(pair))
    video = _clip_with(tmp_path, "two.mp4", iter(frames), _speech(4))
    out = prepare(PrepareConfig(video=video, out=tmp_path / "two", size=64, progress=False))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["several_faces_fraction"] > 0.5
    assert any("several faces" in w for w in summary["warnings"])
    lm = load_dataset(out).tracks.landmarks2d
    centres = lm.mean(1)[:, 0]
    assert np.ptp(centres) < 16  # the same face all along, not hopping between the two


def test_unwritable_output_is_refused(tmp_path: Path, demo_clip: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(GstalkError, match="cannot write"):
        prepare(PrepareConfig(video=demo_clip, out=blocker / "ds", size=64, progress=False))
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(GstalkError, match="already exists"):
        prepare(PrepareConfig(video=demo_clip, out=existing, size=64, progress=False))


def test_dataset_from_another_schema_is_refused(tmp_path: Path, demo_dataset: Path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(demo_dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GstalkError, match="schema 0"):
        load_dataset(copy)
    with pytest.raises(GstalkError, match="not a gstalk dataset"):
        load_dataset(tmp_path)


@pytest.mark.shared_data
def test_real_clip_with_blendshapes(tmp_path: Path):
    video = shared_file("data", "video", "may_5s_512_25fps.mp4")
    task = shared_file("weights", "face_landmarker.task")
    out = prepare(PrepareConfig(video=video, out=tmp_path / "may", size=256, landmarker=task, progress=False))
    ds = load_dataset(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracked_fraction"] == 1.0
    assert ds.expression_spec.code_kind == "blendshapes"
    assert ds.tracks.expression_code.shape == (125, 52)
    names = ds.expression_spec.code_names
    jaw = ds.tracks.expression_code[:, names.index("jawOpen")]
    assert np.corrcoef(jaw, ds.explicit("mouth_open"))[0, 1] > 0.6
    assert summary["pose_jitter"]["rotation_noise_deg"] < 1.0


def test_demo_subject_is_deterministic(tmp_path: Path):
    a = make_demo_subject(tmp_path / "a.mp4", seconds=1.0, seed=5)
    b = make_demo_subject(tmp_path / "b.mp4", seconds=1.0, seed=5)
    from gstalk.media import read_audio

    assert np.array_equal(read_audio(a), read_audio(b))


def test_work_records_round_trip_and_damage_is_named(tmp_path: Path):
    """Each step's record reads back as it was saved (arrays, JSON values, nested dataclasses, None);
    a damaged one is an error telling the user the run starts over."""
    from gstalk.data.manifest import AudioSpec
    from gstalk.prepare.crop import Crop
    from gstalk.prepare.work import Featured, Posed, Tracked, WorkFolder

    work = WorkFolder(tmp_path / "ds", "abc")
    rng = np.random.default_rng(0)
    tracked = Tracked(
        landmarks=rng.normal(size=(5, 478, 3)).astype(np.float32),
        valid=np.array([1, 1, 0, 1, 1], bool),
        n_faces=np.array([1, 2, 0, 1, 1], np.int16),
        audio=rng.normal(size=800).astype(np.float32),
        blendshape_names=[],
    )
    work.save(tracked)
    back = work.load(Tracked)
    assert back.blendshapes is None and back.blendshape_names == []
    for name in ("landmarks", "valid", "n_faces", "audio"):
        assert np.array_equal(getattr(back, name), getattr(tracked, name))
        assert getattr(back, name).dtype == getattr(tracked, name).dtype
    spec = AudioSpec("logmel", 100.0, 16, 80)
    work.save(Featured(spec))
    assert work.load(Featured).spec == spec
    eye = np.tile(np.eye(4), (5, 1, 1))
    posed = Posed(tracked.landmarks, eye, eye, np.ones(4), np.zeros((478, 3)), np.zeros(5),
                  Crop(1, 2, 300, 128), {"rotation_noise_deg": 0.1}, {"fov_deg": 20.0})  # fmt: skip
    work.save(posed)
    assert work.load(Posed).crop == Crop(1, 2, 300, 128)
    (work.dir / "pose.json").write_text("{")
    with pytest.raises(GstalkError, match="damaged record of the pose step") as err:
        work.load(Posed)
    assert "starts over" in err.value.fix
    # a folder left by another config is cleared
    work.finish("pose", 1.0)
    assert WorkFolder(tmp_path / "ds", "abc").done("pose")
    again = WorkFolder(tmp_path / "ds", "other")
    assert not again.done("pose") and not (again.dir / "track.npz").exists()
