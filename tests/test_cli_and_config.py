"""The CLI and config plumbing: help text, saved configs, atomic writes, user-facing errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gstalk import cli
from gstalk.config import BenchConfig, save_config
from gstalk.errors import GstalkError
from gstalk.fileio import atomic_folder, write_json_atomic


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_bench_writes_json_and_its_config(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    code = cli.main(
        [
            "bench",
            "--what",
            "rasterizer",
            "--sizes",
            "32",
            "--gaussians",
            "200",
            "--repeats",
            "1",
            "--backends",
            "torch",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["rasterizer"]["results"] == saved["rasterizer"]["results"]
    row = saved["rasterizer"]["results"][0]
    assert row["backend"] == "torch" and row["gaussians"] == 200 and row["size"] == 32
    assert row["forward_ms_per_frame"] > 0 and row["forward_backward_ms_per_frame"] > 0
    config = json.loads((tmp_path / "bench.config.json").read_text())
    assert config["kind"] == "BenchConfig" and config["config"]["sizes"] == [32]
    assert "schema_version" in config


def test_user_errors_print_problem_and_fix(monkeypatch, capsys):
    def broken(config):
        raise GstalkError("the video has no audio track", "pass a clip with speech")

    monkeypatch.setitem(cli.COMMANDS, "bench", (BenchConfig, broken))
    assert cli.main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "no audio track" in err and "fix: pass a clip with speech" in err


def test_save_config_round_trips(tmp_path: Path):
    path = save_config(BenchConfig(sizes=(64,), out=tmp_path / "x.json"), tmp_path)
    data = json.loads(path.read_text())
    assert data["config"]["sizes"] == [64] and data["config"]["out"] == str(tmp_path / "x.json")


def test_atomic_files_get_ordinary_permissions(tmp_path: Path):
    import os
    import stat

    write_json_atomic(tmp_path / "m.json", {})
    mode = stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask  # not mkstemp's private 0600


def test_atomic_writes_leave_nothing_half_written(tmp_path: Path):
    target = tmp_path / "data.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    folder = tmp_path / "dataset"
    with pytest.raises(RuntimeError), atomic_folder(folder) as tmp:
        (tmp / "part.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == [target]
    with atomic_folder(folder) as tmp:
        (tmp / "done.txt").write_text("all")
    assert (folder / "done.txt").read_text() == "all"
