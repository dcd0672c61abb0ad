"""One exception type for problems a user can fix, with the fix spelled out."""

from __future__ import annotations


class GstalkError(Exception):
    """A problem with the user's input or environment.

    ``problem`` says what is wrong, ``fix`` says what to do about it. The CLI prints both and exits
    with status 2 instead of a traceback.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")
