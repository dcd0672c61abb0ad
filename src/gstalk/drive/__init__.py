"""Audio → frames → video, whole files or streamed.

The names are loaded when first asked for: ``render_video``'s checks (the output, the audio's header and
scan) run before PyTorch is imported, so a render refused for its input costs tens of MB, not hundreds.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: public name → the module that defines it
_WHERE = {
    "Driver": ".driver",
    "PoseSource": ".driver",
    "pingpong": ".driver",
    "stream_frames": ".stream",
    "render_video": ".video",
}

__all__ = ["Driver", "PoseSource", "pingpong", "render_video", "stream_frames"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(name)
