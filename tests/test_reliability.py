"""A corpus of bad inputs and faults, run through the ``gstalk`` command as a careless or unlucky user would.

For each case: exit code 2, a message naming the problem and a fix (no traceback), nothing partial at the
output path, and what was there before untouched. Inputs are built here from the generated subject;
nothing is committed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from gstalk.cli import main
from gstalk.config import AudioMotionConfig, TrainConfig
from gstalk.demo import speech_like_audio
from gstalk.model.checkpoint import MODEL_FILE, load_model
from gstalk.outputs import output_lock
from gstalk.train import train
from gstalk.train.checkpoint import FOLDER, latest_checkpoint


def gstalk(capsys, *args: str) -> tuple[int, str]:
    """Run the command in-process; returns its exit code and what it printed on stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "gstalk: error:" in err and "fix:" in err and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def no_partials(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".tmp", ".lock"))]
    assert not left, left


@pytest.fixture(scope="module")
def run(demo_dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(
        TrainConfig(
            dataset=demo_dataset, out=out, size=64, max_gaussians=600, iterations=(10, 10, 4), progress=False,
            audio_motion=AudioMotionConfig(steps=40, augmented_copies=1),
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    soundfile.write(path, speech_like_audio(2.0, seed=5).audio, 16_000)
    return path


# --- data loss -----------------------------------------------------------------------------------------
def test_overwrite_refuses_a_folder_gstalk_did_not_make(capsys, tmp_path: Path, demo_clip: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years")
    code, err = gstalk(capsys, "prepare", "--video", demo_clip, "--out", mine, "--overwrite", "--no-progress")
    assert_refused(code, err, "not a gstalk dataset")
    assert (mine / "thesis.txt").read_text() == "four years"
    no_partials(tmp_path)


def test_outputs_never_overwrite_inputs(capsys, run: Path, speech: Path, demo_clip: Path, tmp_path: Path):
    before = speech.read_bytes()
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", speech, "--no-progress")
    assert_refused(code, err, "input")
    assert speech.read_bytes() == before
    code, err = gstalk(capsys, "prepare", "--video", demo_clip, "--out", demo_clip.parent, "--overwrite")
    assert_refused(code, err, "input")
    assert demo_clip.is_file()
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", run / "x.mp4")
    assert_refused(code, err, "inside the input")


def test_render_output_extension_and_folder_are_checked_up_front(capsys, run, speech, tmp_path: Path):
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", tmp_path / "o.avi")
    assert_refused(code, err, ".avi", "o.mp4")
    (tmp_path / "folder.mp4").mkdir()
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", tmp_path / "folder.mp4")
    assert_refused(code, err, "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.mp4"]


def test_render_writes_the_container_its_extension_names(run: Path, speech: Path, tmp_path: Path, capsys):
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", tmp_path / "o.mkv",
                       "--no-progress", "--size", "64")  # fmt: skip
    assert code == 0, err
    with av.open(str(tmp_path / "o.mkv")) as f:
        assert "matroska" in f.format.name and f.streams.audio and f.streams.video


# --- two jobs, one output --------------------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from gstalk.outputs import output_lock
with output_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_job_on_the_same_output_is_refused(capsys, demo_dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        code, err = gstalk(capsys, "train", "--dataset", demo_dataset, "--out", out, "--no-progress")
        assert_refused(code, err, f"in use by another gstalk job (PID {proc.pid})")
        assert not out.exists()
    finally:
        proc.kill()
        proc.wait()
    # the holder died without cleaning up: its lock file is stale and is taken over with a warning
    assert (tmp_path / ".run.lock").read_text().strip() == str(proc.pid)
    with output_lock(out):
        pass
    assert f"left by PID {proc.pid}" in capsys.readouterr().err
    assert not (tmp_path / ".run.lock").exists()


# --- crash-safe checkpoints -------------------------------------------------------------------------------
SAVE = """
import sys
from pathlib import Path
import torch
from gstalk.data import load_dataset
from gstalk.model.init import init_talking_head
from gstalk.train.checkpoint import save_training_checkpoint
run, dataset, step = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
model = init_talking_head(load_dataset(dataset), 300, seed=step)
optimizer = torch.optim.Adam(model.parameters())
save_training_checkpoint(run, model, {"stage_index": 1, "step": step}, optimizer, torch.get_rng_state())
"""
FAULTS = ["partial-created", "model-written", "partial-complete", "before-rename", "renamed",
          "pointer-written", "retired-one"]  # fmt: skip


def _save(run: Path, dataset: Path, step: int, fault: str | None = None) -> int:
    env = {**os.environ, "GSTALK_FAULT_AT": fault or "", "GSTALK_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", SAVE, str(run), str(dataset), str(step)], env=env).returncode


@pytest.mark.parametrize("fault", FAULTS)
def test_a_save_killed_at_any_point_leaves_a_complete_checkpoint(fault: str, demo_dataset: Path, tmp_path):
    run = tmp_path / "run"
    assert _save(run, demo_dataset, 5) == 0
    assert _save(run, demo_dataset, 10, fault) == 86  # killed there, like kill -9
    latest = latest_checkpoint(run)
    _, meta = load_model(latest)  # complete and valid, whatever was left behind
    assert meta["step"] == (5 if FAULTS.index(fault) < FAULTS.index("renamed") else 10)
    assert _save(run, demo_dataset, 15) == 0  # the next save cleans up and succeeds
    assert load_model(latest_checkpoint(run))[1]["step"] == 15
    assert sorted(p.name for p in (run / FOLDER).iterdir()) == ["01-0000015", "latest"]


def test_resume_never_loses_progress_and_log_is_never_truncated(demo_dataset: Path, tmp_path: Path, capsys):
    cfg = TrainConfig(
        dataset=demo_dataset, out=tmp_path / "r", size=64, max_gaussians=400, iterations=(12, 0, 0),
        checkpoint_every=4, log_every=1, progress=False,
        audio_motion=AudioMotionConfig(steps=20, augmented_copies=1),
    )  # fmt: skip
    stopped = {"at": None}

    def stop(trainer, stage, step):
        if step == 6:
            trainer.request_stop()
            stopped["at"] = step

    from gstalk.train.trainer import Trainer, read_log

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, on_step=stop).run()
    assert "--resume" in capsys.readouterr().err  # the hint is printed without progress bars too
    log_before = (tmp_path / "r" / "log.csv").read_text()
    # leftovers of a crashed save do not stop the next one
    (tmp_path / "r" / FOLDER / ".01-0000009.partial").mkdir()
    (tmp_path / "r" / FOLDER / ".00-0000004.trash").mkdir()
    import dataclasses

    Trainer(dataclasses.replace(cfg, resume=True)).run()
    log_after = (tmp_path / "r" / "log.csv").read_text()
    assert log_after.startswith(log_before)
    steps = [int(r["step"]) for r in read_log(tmp_path / "r" / "log.csv")]
    assert steps == list(range(12))
    no_partials(tmp_path / "r" / FOLDER)


# --- wrong diagnosis: a cut video -----------------------------------------------------------------------
def _faststart_copy(src: Path, dst: Path) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {
            s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")
        }
        for packet in inp.demux():
            if packet.dts is not None and packet.stream.index in streams:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def test_a_cut_video_is_reported_as_truncated(capsys, demo_clip: Path, tmp_path: Path):
    whole = tmp_path / "whole.mp4"
    _faststart_copy(demo_clip, whole)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    code, err = gstalk(capsys, "prepare", "--video", cut, "--out", tmp_path / "ds", "--no-progress")
    assert_refused(code, err, "truncated", "corrupt")
    assert not (tmp_path / "ds").exists()
    no_partials(tmp_path)


# --- damaged datasets and checkpoints ---------------------------------------------------------------------
@pytest.fixture
def dataset_copy(demo_dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(demo_dataset, copy)
    return copy


def test_check_reports_every_problem_at_once(capsys, dataset_copy: Path, tmp_path: Path):
    code, err = gstalk(capsys, "check", "--dataset", dataset_copy)
    assert code == 0, err
    frames = sorted((dataset_copy / "frames").iterdir())
    frames[3].unlink()
    data = frames[5].read_bytes()
    frames[5].write_bytes(data[: len(data) // 2])  # decodes as a half-grey image without this check
    (dataset_copy / "regions" / frames[7].with_suffix(".png").name).write_bytes(b"")
    code, err = gstalk(capsys, "check", "--dataset", dataset_copy)
    assert_refused(code, err, "3 problem(s)", frames[3].name, "missing", frames[5].name, "truncated")
    code, err = gstalk(capsys, "train", "--dataset", dataset_copy, "--out", tmp_path / "run", "--no-progress")
    assert_refused(code, err, "3 problem(s)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["truncated features", "missing tracks", "NaN features"])
def test_damaged_dataset_arrays_get_a_message(capsys, dataset_copy: Path, damage: str, tmp_path: Path):
    feats = dataset_copy / "audio_features.npy"
    if damage == "truncated features":
        feats.write_bytes(feats.read_bytes()[:300])
    elif damage == "missing tracks":
        (dataset_copy / "tracks.npz").unlink()
    else:
        arr = np.load(feats)
        arr[2, 0, 0] = np.nan
        np.save(feats, arr)
    code, err = gstalk(capsys, "check", "--dataset", dataset_copy)
    assert_refused(code, err, "prepare")


@pytest.mark.parametrize("damage", ["random bytes", "NaN", "index out of range", "flipped bits"])
def test_damaged_weights_get_a_message(capsys, run: Path, speech: Path, damage: str, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "model" / MODEL_FILE
    if damage == "random bytes":
        weights.write_bytes(np.random.default_rng(0).bytes(weights.stat().st_size))
    elif damage == "flipped bits":
        data = bytearray(weights.read_bytes())
        for pos in np.random.default_rng(1).integers(len(data) // 2, len(data), 400):
            data[pos] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        tensors = load_file(str(weights))
        if damage == "NaN":
            tensors["head.params.means"][0, 0] = float("nan")
        else:
            tensors["head.parent"][0] = 10**6
        save_file(tensors, str(weights))
    out = tmp_path / "o.mp4"
    code, err = gstalk(capsys, "render", "--run", copy, "--audio", speech, "--out", out, "--no-progress")
    assert_refused(code, err, "model")
    assert not out.exists()
    no_partials(tmp_path)


# --- operating-system errors --------------------------------------------------------------------------------
def test_disk_full_and_permission_errors_become_messages(capsys, monkeypatch, speech, run, tmp_path: Path):
    import errno

    import gstalk.drive.video as video

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.mp4"))

    monkeypatch.setattr(video, "write_video", full)
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", tmp_path / "o.mp4")
    assert_refused(code, err, "No space left", "free disk space")
    assert not (tmp_path / "o.mp4").exists()
    no_partials(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output_is_refused_before_work(capsys, speech, run, tmp_path: Path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", locked / "o.mp4")
        assert_refused(code, err, "cannot write")
    finally:
        locked.chmod(0o700)


def test_disk_space_is_checked_up_front(monkeypatch, capsys, speech, run, tmp_path: Path):
    import gstalk.outputs as outputs

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    code, err = gstalk(capsys, "render", "--run", run, "--audio", speech, "--out", tmp_path / "o.mp4")
    assert_refused(code, err, "MB free")


# --- small fixes --------------------------------------------------------------------------------
def test_long_render_asks_for_yes(capsys, run: Path, tmp_path: Path):
    audio = tmp_path / "long.wav"
    soundfile.write(audio, speech_like_audio(4.0, seed=2).audio, 16_000)
    args = ["render", "--run", run, "--audio", audio, "--out", tmp_path / "o.mp4", "--no-progress",
            "--confirm-minutes", "0.0001"]  # fmt: skip
    code, err = gstalk(capsys, *args)
    assert_refused(code, err, "will take about", "--yes")
    assert not (tmp_path / "o.mp4").exists()
    code, err = gstalk(capsys, *args, "--yes")
    assert code == 0, err
    assert (tmp_path / "o.mp4").is_file()


def test_evaluate_with_few_frames_and_strict_json(capsys, run: Path, tmp_path: Path):
    out = tmp_path / "eval"
    code, err = gstalk(capsys, "evaluate", "--run", run, "--out", out, "--max-frames", "4", "--no-baselines",
                       "--no-progress")  # fmt: skip
    assert code == 0, err
    json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    code, err = gstalk(capsys, "evaluate", "--run", run, "--out", out, "--max-frames", "1", "--no-progress")
    assert_refused(code, err, "test frame")
    assert (out / "metrics.json").is_file()  # the earlier evaluation is untouched
    no_partials(tmp_path)


@pytest.mark.parametrize("content", ["{broken", '{"frames": [], "focal_len": 1000}'])
def test_import_ernerf_with_bad_transforms(capsys, tmp_path: Path, content: str):
    folder = tmp_path / "ernerf"
    (folder / "ori_imgs").mkdir(parents=True)
    for split in ("train", "val"):
        (folder / f"transforms_{split}.json").write_text(content)
    code, err = gstalk(capsys, "import-ernerf", "--folder", folder, "--out", tmp_path / "ds", "--no-progress")
    assert_refused(code, err, "transforms")
    assert not (tmp_path / "ds").exists()


def test_export_ernerf_is_atomic_and_refuses_existing(capsys, demo_dataset: Path, tmp_path: Path):
    (tmp_path / "taken").mkdir()
    code, err = gstalk(capsys, "export-ernerf", "--dataset", demo_dataset, "--out", tmp_path / "taken")
    assert_refused(code, err, "already exists")
    code, err = gstalk(capsys, "export-ernerf", "--dataset", demo_dataset, "--out", demo_dataset / "x")
    assert_refused(code, err, "input")


def test_checkpoint_files_share_one_mode(run: Path):
    modes = {p.name: p.stat().st_mode & 0o777 for p in (run / "model").iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_sigkill_during_training_resumes(demo_dataset: Path, tmp_path: Path):
    """One kill -9 in the middle of training, then --resume finishes (benchmarks/kill_resume.py does 20)."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gstalk", "train", "--dataset", str(demo_dataset), "--out", str(out),
            "--size", "64", "--max-gaussians", "400", "--iterations", "300", "30", "5",
            "--checkpoint-every", "3", "--audio-motion.steps", "20", "--audio-motion.augmented-copies", "1",
            "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(args, env={**os.environ, "GSTALK_THREADS": "1"})
    deadline = time.time() + 120
    while _step(out) < 6:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*args, "--resume"], env={**os.environ, "GSTALK_THREADS": "1"}, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    model, _ = load_model(out / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _step(run: Path) -> int:
    """The newest checkpoint's step, read while training may be replacing it."""
    try:
        return int(json.loads((latest_checkpoint(run) / "checkpoint.json").read_text())["step"])
    except (TypeError, OSError, ValueError, KeyError):
        return -1
