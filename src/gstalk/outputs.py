"""Output paths: checked before any work starts, never one of the inputs, replaced only when gstalk made
them, and written by one job at a time. gstalk never deletes or replaces a file it did not make.

- :func:`check_output` refuses an output that is, holds, or lies inside an input, one that is a folder
  where a file is wanted (or the reverse), and one whose folder cannot be written.
- :func:`check_replaceable` lets ``--overwrite`` replace a folder holding the marker file the caller names
  (a dataset's manifest, ``data.layout.MANIFEST``; a run's, ``data.run_layout.RUN_MARKERS``), and refuses
  anything else: it might be the user's. :func:`check_replaceable_file` is the same for a file (a
  render's video, its config), with the caller's test of whether gstalk made it.
- :func:`output_lock` holds an advisory lock (``flock``) on ``.NAME.lock`` beside the output for the whole
  command. The lock file appears with gstalk's PID already in it (written, locked, then linked into
  place), so a file there that holds anything else is not gstalk's, and is neither used nor deleted. The
  kernel releases the lock when the process dies however it dies, so a lock file left by a killed job is
  recognised as stale and taken over with a warning; a live one gives "in use by PID …".
- :func:`check_free_space` refuses work whose estimated output does not fit on the disk.
- :func:`claim_output` does all of that for one command; for a file output it also removes gstalk's own
  temporary files of it left by a killed job (``fileio.stale_temps``), with a note. On failure it
  removes the folders it created for the output if they are still empty (a failed ``prepare --out
  data/me`` leaves no empty ``data/``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .errors import GstalkError
from .fileio import TAG, stale_temps


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


def made_by_gstalk(path: Path, markers: Sequence[str] = ()) -> bool:
    """Whether folder ``path`` is a gstalk output (what ``--overwrite`` may replace): it holds one of the
    files or folders ``markers`` names (e.g. a dataset's manifest)."""
    path = Path(path)
    return any((path / m).exists() for m in markers)


def check_replaceable(path: Path, what: str, markers: Sequence[str] = ()) -> None:
    """Refuse ``--overwrite`` of a folder gstalk did not make (an empty folder may be reused); ``markers``
    as in :func:`made_by_gstalk`."""
    path = Path(path)
    if not path.exists() or made_by_gstalk(path, markers):
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise GstalkError(
        f"{path} exists and is not a gstalk {what}, so --overwrite will not delete it",
        "choose another output path, or move that folder away yourself",
    )


def check_replaceable_file(path: Path, overwrite: bool, ours: Callable[[Path], bool], what: str) -> None:
    """An existing file ``path`` may be replaced only with ``overwrite``, and only when ``ours(path)`` says
    gstalk made it (``what`` names it in the messages, e.g. "video gstalk render made")."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise GstalkError(f"{path} is a folder", "choose another output path")
    if not overwrite:
        raise GstalkError(f"{path} already exists",
                          f"pass --overwrite to replace it (only a {what} is replaced), or choose another "
                          "output path")  # fmt: skip
    if not ours(path):
        raise GstalkError(f"{path} exists and is not a {what}, so --overwrite will not replace it",
                          "choose another output path, or move that file away yourself")  # fmt: skip


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold the lock of output ``out`` (a file or folder) for the duration of the block. Raises
    GstalkError when another job holds it, or when a file that is not a gstalk lock is in its place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    while True:
        fd = _new_lock(path)
        if fd is not None:
            break
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # its holder just removed it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise GstalkError(
                f"{out} is in use by another gstalk job (PID {holder})",
                "wait for it to finish, or choose another output path",
            ) from None
        if not _same_file(fd, path):  # unlinked by its previous holder between our open and flock
            os.close(fd)
            continue
        stale = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if not stale.isdigit():  # gstalk's lock files hold a PID from the moment they exist
            os.close(fd)
            raise GstalkError(
                f"{path} is in the way: gstalk keeps the lock of {out.name} under that name, and that file "
                "is not one of its locks (gstalk will not touch it)",
                "move or rename that file, or choose another output path",
            )
        print(
            f"gstalk: warning: taking over the lock of {out} left by PID {stale}, which is no longer running",
            file=sys.stderr,
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        break
    try:
        yield path
    finally:
        if _same_file(fd, path):
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _new_lock(path: Path) -> int | None:
    """A new lock file at ``path``, already holding this PID and locked, as an open descriptor; None when
    something is there already. It is written under a temporary name and linked into place (``link``
    fails rather than replace), so a lock file never exists without its PID."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TAG}", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def claim_output(
    out: Path,
    inputs: Iterable[Path | None] = (),
    folder: bool = True,
    overwrite: bool = False,
    what: str = "dataset",
    markers: Sequence[str] = (),
) -> Iterator[Path]:
    """Check ``out`` (see :func:`check_output`; with ``overwrite``, :func:`check_replaceable` with
    ``markers``, what marks a folder of this kind), create its parent folders, and hold its lock for the
    block. A file output's own temporary files left by a killed job are removed, with a note (a file
    output's replacement rule is the caller's: :func:`check_replaceable_file`). On an error, the parent
    folders created here are removed again if they are empty."""
    out = check_output(out, inputs, folder)
    if overwrite and folder:
        check_replaceable(out, what, markers)
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
            if not folder:
                for stale in stale_temps(out):  # the lock is ours: no live writer owns them
                    print(f"gstalk: note: removing {stale.name}, left by a gstalk job that was stopped",
                          file=sys.stderr)  # fmt: skip
                    stale.unlink(missing_ok=True)
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
