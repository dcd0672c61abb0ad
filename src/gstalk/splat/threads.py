"""gstalk's worker threads for the compiled kernels, and the process's thread policy.

The compiled kernels release the GIL and work on disjoint parts (tiles of the image, ranges of
Gaussians), so a small pool of ordinary threads runs them in parallel. Unlike OpenMP's (which numba's
``prange`` and PyTorch use), idle pool threads block rather than spin: two gstalk processes sharing a
machine then split it fairly instead of each spinning on the other's cores (measured: docs/benchmarks.md).

:func:`configure` sets the thread counts once per process: ``GSTALK_THREADS`` or ``threads`` workers
(default: the cores this process may use), PyTorch's intra-op threads to match, and OpenMP's waiting
policy to passive (``gstalk/__init__.py`` sets it before PyTorch loads).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_pool: ThreadPoolExecutor | None = None
_threads: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a container limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads() -> int:
    """The number of worker threads (configuring the defaults on first use)."""
    if _threads is None:
        configure()
    return _threads  # type: ignore[return-value]


def configure(count: int | None = None, torch_threads: int | None = None) -> int:
    """Use ``count`` threads (default: ``GSTALK_THREADS``, else every available core) for the compiled
    kernels, and ``torch_threads`` (default: ``count``) for PyTorch's own operations. Returns ``count``."""
    global _pool, _threads
    if count is None:
        env = os.environ.get("GSTALK_THREADS")
        count = int(env) if env else available_cores()
    count = max(1, int(count))
    if count != _threads:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(count, thread_name_prefix="gstalk") if count > 1 else None
        _threads = count
    import torch

    torch.set_num_threads(max(1, int(torch_threads or count)))
    return count


@contextlib.contextmanager
def serial_torch() -> Iterator[None]:
    """Within the block, PyTorch runs each operation on the calling thread alone (intra-op threads 1),
    then goes back to its previous count. For loops of many small operations around the compiled kernels
    (a training step's model, losses, autograd and Adam on 512² images and 10k Gaussians): there the
    OpenMP fork and join of each operation cost more than the second thread gains (measured: a cpu-preset
    training step 10–20 % faster on 2 cores), and the kernels use gstalk's pool regardless."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_tiles(
    tiles: np.ndarray, costs: np.ndarray | None = None, min_cost: float = 4000
) -> list[np.ndarray]:
    """Share tiles among the workers, interleaved: part k takes tiles k, k + P, k + 2P, ... of the P
    parts, so every part samples the whole image and costs about the same whatever the picture (a face
    filling the frame, or a small one over empty tiles). Without ``costs``, one part per worker. With
    ``costs`` (an estimate per tile), up to four parts per worker and none under ``min_cost`` (small
    images are not worth a hand-off): :func:`for_each_part` hands them out as threads come free, so a
    part that takes longer than the others, or a worker that starts late, leaves the rest to the others.

    Contiguous runs of equal *estimated* cost were used before; on a 512² face-filling frame the estimate
    (lane rows per entry) missed the early stop of opaque tiles and the cost of writing empty ones, so
    one run took twice its share and two threads ran the frame barely faster than one."""
    n = threads()
    if costs is None or n == 1 or len(tiles) < 2:
        n = min(n, max(len(tiles), 1))
        return [np.ascontiguousarray(tiles[i::n]) for i in range(n)]
    n_parts = int(min(4 * n, len(tiles), max(float(np.sum(costs)) // min_cost, 1)))
    return [np.ascontiguousarray(tiles[i::n_parts]) for i in range(n_parts)]


def split_range(n_items: int, per_worker: int = 2, min_per_part: int = 1000) -> list[tuple[int, int]]:
    """Contiguous ranges of ``n_items`` items, ``per_worker`` per worker, none under ``min_per_part``
    items (unless there are fewer in all)."""
    n = max(min(threads() * per_worker if threads() > 1 else 1, n_items // min_per_part), 1)
    edges = np.linspace(0, n_items, n + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def for_each_part(fn: Callable, parts: Sequence) -> None:
    """Run ``fn(part)`` for every part, on this thread and the workers.

    Parts are handed out one at a time to whichever thread asks first, this one included, so a worker
    that the operating system has not scheduled yet (the cores busy with other work) delays nothing: this
    thread takes its parts, and a worker that never started is cancelled rather than waited for."""
    if _pool is None or len(parts) < 2:
        for part in parts:
            fn(part)
        return
    queue = iter(parts)
    lock = threading.Lock()

    def pull() -> None:
        while True:
            with lock:
                part = next(queue, _DONE)
            if part is _DONE:
                return
            fn(part)

    helpers = [_pool.submit(pull) for _ in range(min(threads(), len(parts)) - 1)]
    try:
        pull()
    finally:
        for helper in helpers:
            if not helper.cancel():
                helper.result()


_DONE = object()
