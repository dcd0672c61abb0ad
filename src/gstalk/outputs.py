"""Output paths: checked before any work starts, never one of the inputs, replaced only when gstalk made
them, and written by one job at a time.

- :func:`check_output` refuses an output that is, holds, or lies inside an input, one that is a folder
  where a file is wanted (or the reverse), and one whose folder cannot be written.
- :func:`check_replaceable` lets ``--overwrite`` replace a folder holding the marker file the caller names
  (a dataset's manifest, ``data.layout.MANIFEST``) or a run (it has ``config.json`` and checkpoints or a
  model), and refuses anything else: it might be the user's.
- :func:`output_lock` holds an advisory lock (``flock``) on ``.NAME.lock`` beside the output for the whole
  command. The kernel releases it when the process dies however it dies, so a lock file left by a killed
  job is recognised as stale and taken over with a warning; a live one gives "in use by PID …".
- :func:`check_free_space` refuses work whose estimated output does not fit on the disk.
- :func:`claim_output` does all of that for one command, and on failure removes the folders it created
  for the output if they are still empty (a failed ``prepare --out data/me`` leaves no empty ``data/``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import GstalkError

RUN_MARKERS = ("checkpoints", "model", "checkpoint")


def check_output(out: Path, inputs: Iterable[Path | None] = (), folder: bool = True) -> Path:
    """``out`` resolved, after refusing what would destroy an input or fail only after the work.

    ``folder``: the output is a folder (prepare, train, evaluate) rather than a file (render)."""
    out = Path(out)
    resolved = out.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if resolved == source or source in resolved.parents or resolved in source.parents:
            raise GstalkError(
                f"the output {out} would overwrite or sit inside the input {given}",
                "choose an output path outside your inputs",
            )
    if folder and out.exists() and not out.is_dir():
        raise GstalkError(f"{out} exists and is a file, not a folder", "choose another output path")
    if not folder and out.is_dir():
        raise GstalkError(f"{out} is a folder; the output is a file", "pass a file name, e.g. out.mp4")
    existing = resolved.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GstalkError(f"cannot write to {existing} (permission denied or not a folder)",
                          "choose an output in a writable folder")  # fmt: skip
    return resolved


def made_by_gstalk(path: Path, marker: str | None = None) -> bool:
    """Whether ``path`` is a gstalk output (what ``--overwrite`` may replace): it holds the file ``marker``
    (e.g. a dataset's manifest), or it is a run folder."""
    path = Path(path)
    if marker is not None and (path / marker).is_file():
        return True
    return (path / "config.json").is_file() and any((path / m).exists() for m in RUN_MARKERS)


def check_replaceable(path: Path, what: str, marker: str | None = None) -> None:
    """Refuse ``--overwrite`` of anything gstalk did not make (an empty folder may be reused); ``marker`` as
    in :func:`made_by_gstalk`."""
    path = Path(path)
    if not path.exists() or made_by_gstalk(path, marker):
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise GstalkError(
        f"{path} exists and is not a gstalk {what}, so --overwrite will not delete it",
        "choose another output path, or move that folder away yourself",
    )


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold the lock of output ``out`` (a file or folder) for the duration of the block."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise GstalkError(
                f"{out} is in use by another gstalk job (PID {holder})",
                "wait for it to finish, or choose another output path",
            ) from None
        try:  # the file may have been unlinked by its previous holder between our open and flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if stale:
        print(
            f"gstalk: warning: taking over the lock of {out} left by PID {stale}, which is no longer running",
            file=sys.stderr,
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def claim_output(
    out: Path,
    inputs: Iterable[Path | None] = (),
    folder: bool = True,
    overwrite: bool = False,
    what: str = "dataset",
    marker: str | None = None,
) -> Iterator[Path]:
    """Check ``out`` (see :func:`check_output`; with ``overwrite``, :func:`check_replaceable` with
    ``marker``, the file that marks an output of this kind), create its parent folders, and hold its lock
    for the block. On an error, the parent folders created here are removed again if they are empty."""
    out = check_output(out, inputs, folder)
    if overwrite and folder:
        check_replaceable(out, what, marker)
    created = []
    parent = out.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GstalkError(f"cannot create {out.parent} ({err.strerror})",
                          "choose an output in a writable folder") from err  # fmt: skip
    try:
        with output_lock(out):
            yield out
    except BaseException:
        for folder_made in created:  # innermost first
            with contextlib.suppress(OSError):
                folder_made.rmdir()  # only if empty
        raise


def check_free_space(folder: Path, needed_bytes: float, what: str) -> None:
    """Refuse to start when ``what`` (about ``needed_bytes``) will not fit on ``folder``'s disk."""
    folder = Path(folder)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed_bytes * 1.1 > free:
        raise GstalkError(
            f"{what} needs about {needed_bytes / 1e6:,.0f} MB but {folder} has {free / 1e6:,.0f} MB free",
            "free some disk space, or choose an output on another disk",
        )
