"""Which render replica a request goes to: the rule of ``serve.replica.SessionRouter``, free of Ray.

Kept apart from ``serve.replica`` (which imports Ray Serve) and ``serve.cluster`` (the front end's side),
so both use it without importing each other, and it is tested without Ray.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def rank_replicas(
    replicas: Sequence[tuple[str, int | None]], pinned: str | None, exclude: Sequence[str] = ()
) -> list[list[str]]:
    """Replica ids in the order to try, one per rank: ``replicas`` is (id, free slots or None when not yet
    reported). A ``pinned`` replica is the only choice while it is there (otherwise any replica will do,
    to be told the session is gone); else the replicas not excluded, most free slots first (ties in random
    order), or every replica when all are excluded (one answers "full" again: then all are full)."""
    ids = [r for r, _ in replicas]
    if pinned is not None:
        return [[pinned]] if pinned in ids else [ids]
    skip = set(exclude)
    order = [(r, -1 if room is None else room, random.random()) for r, room in replicas if r not in skip]
    order.sort(key=lambda item: (-item[1], item[2]))
    return [[r] for r, _, _ in order] or [ids]
