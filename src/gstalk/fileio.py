"""Writing files and folders so that nothing half-written is ever left in place."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the tag in every temporary name gstalk gives a file or folder: only names with it are ever cleaned up
TAG = "gstalk-"
#: mkstemp / mkdtemp's random part: 8 characters of this set
_RANDOM = "[a-z0-9_]{8}"


def temp_pattern(path: str | os.PathLike, suffix: str) -> re.Pattern[str]:
    """The names of gstalk's temporary files (or folders) for ``path``: ``.NAME.gstalk-XXXXXXXX{suffix}``.
    A user's file never matches unless named exactly so; nothing else is ever removed as a leftover."""
    return re.compile(rf"\.{re.escape(Path(path).name)}\.{TAG}{_RANDOM}{re.escape(suffix)}")


def stale_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """gstalk's temporary files (or folders) beside ``path`` (see :func:`temp_pattern`)."""
    path = Path(path)
    pattern = temp_pattern(path, suffix)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unnamed: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    The temporary file is ``.NAME.gstalk-XXXXXXXX.tmp``; such files left by a killed writer of ``path``
    are removed first (no other file is touched). ``unnamed``: the file has no name at all until it is
    complete (Linux ``O_TMPFILE``; the yielded path is ``/proc/self/fd/N``, to be opened by path, e.g. by
    FFmpeg), so a writer killed at any moment leaves nothing behind; where the file system cannot do that,
    a named temporary file is used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temps(path):  # left by a killed writer of this file
        stale.unlink(missing_ok=True)
    if unnamed:
        fd = _unnamed_file(path.parent)
        if fd is not None:
            with _linked_on_success(fd, path) as tmp:
                yield tmp
            return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TAG}", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _unnamed_file(folder: Path) -> int | None:
    """A file descriptor of a new file without a name in ``folder`` (``O_TMPFILE``), or None where the
    system or the file system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not Path("/proc/self/fd").is_dir():
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o666)  # the mode minus the umask, as for any new file
    except OSError:  # EOPNOTSUPP, EISDIR (old kernels), EINVAL: fall back to a named file
        return None


@contextlib.contextmanager
def _linked_on_success(fd: int, path: Path) -> Iterator[Path]:
    """Yield ``/proc/self/fd/FD``; on success link the file in as a named temporary file and rename that
    onto ``path`` (a name appears only for that instant)."""
    try:
        yield Path(f"/proc/self/fd/{fd}")
        name = f".{path.name}.{TAG}{secrets.token_hex(4)}.tmp"
        proc = os.open("/proc/self/fd", os.O_RDONLY)
        try:  # linkat(AT_SYMLINK_FOLLOW) of the descriptor's magic link: the file gets a name
            os.link(str(fd), path.parent / name, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)
        try:
            os.replace(path.parent / name, path)
        except BaseException:
            (path.parent / name).unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Strict JSON (no NaN or Infinity: see :func:`strict_json`), written atomically."""
    text = json.dumps(strict_json(data), indent=2, sort_keys=False, default=_jsonable, allow_nan=False)
    write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike, missing: tuple[str, str], fix: str) -> Any:
    """The JSON value in ``path``. Raises :class:`GstalkError` with ``missing`` (problem, fix) when the
    file is absent, and "PATH is corrupt (…)" with ``fix`` when it is not valid UTF-8 JSON."""
    from .errors import GstalkError

    path = Path(path)
    if not path.is_file():
        raise GstalkError(*missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GstalkError(f"{path} is corrupt ({type(err).__name__}: {err})", fix) from err


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return strict_json(value.item())
    return value


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path`` and move it into place only when complete.

    With ``overwrite``, an existing folder is first renamed aside (a unique name), the new one moved in,
    and only then the old one deleted: at every moment one complete folder exists. The temporary names
    are ``.NAME.gstalk-XXXXXXXX.partial`` and ``.old``; such folders left by a killed writer are removed
    first (no other folder is touched).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # what a killed writer of this folder left (its output is locked, so no live writer owns them)
    for stale in [*stale_temps(path, ".partial"), *stale_temps(path, ".old")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{TAG}", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            aside = tmp.with_name(tmp.name.removesuffix(".partial") + ".old")
            os.replace(path, aside)
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def usual_mode(path: str | os.PathLike) -> None:
    """Give a file the permissions of a newly created one (some writers, e.g. safetensors, make 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
