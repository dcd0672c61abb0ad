"""Writing files and folders so that nothing half-written is ever left in place."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer of this file
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
    and only then the old one deleted: at every moment one complete folder exists.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # what a killed writer of this folder left (its output is locked, so no live writer owns them)
    for stale in [*path.parent.glob(f".{path.name}.*.partial"), *path.parent.glob(f".{path.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            aside = path.parent / f".{path.name}.old-{os.getpid()}-{tmp.name.rsplit('.', 2)[-2]}"
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
