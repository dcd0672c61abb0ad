"""Stage timing for profiles: wall-clock and this thread's CPU seconds per named stage (``gstalk bench``)."""

from __future__ import annotations

import time


class Laps:
    """Seconds per named stage, summed over calls: ``wall`` (``time.perf_counter``) and ``cpu`` (this
    thread's CPU time, ``time.thread_time``: the work itself, which other processes on the machine
    barely change, where wall-clock time waits for them).

    ``start()`` sets the mark; each ``lap(name)`` adds the time since the mark to ``name`` and moves the
    mark. Code that takes an optional ``Laps`` uses :data:`NO_LAPS` when given none."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._mark = (0.0, 0.0)

    def start(self) -> None:
        self._mark = (time.perf_counter(), time.thread_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.thread_time())
        self.wall[name] = self.wall.get(name, 0.0) + now[0] - self._mark[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + now[1] - self._mark[1]
        self._mark = now

    def add(self, name: str, wall: float, cpu: float = 0.0) -> None:
        """Add seconds measured elsewhere (another thread's, or a sub-stage's)."""
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu


class _NoLaps(Laps):
    def start(self) -> None:
        pass

    def lap(self, name: str) -> None:
        pass

    def add(self, name: str, wall: float, cpu: float = 0.0) -> None:
        pass


#: a :class:`Laps` that records nothing
NO_LAPS: Laps = _NoLaps()
