"""The page's text messages on the WebSocket, read with bounds before any parsing.

The page sends two kinds, both a flat JSON object of a few dozen bytes: ``{"type": "start", "avatar":
NAME}`` and ``{"type": "end"}``. Anything longer than :data:`MAX_CHARS`, or nested deeper than
:data:`MAX_DEPTH`, is refused by a linear scan before ``json.loads`` sees it (CPython's parser recurses
once per level: ``[[[[…`` 100 000 deep raised ``RecursionError``). Every way a message can be wrong is a
:class:`BadMessage` whose text goes back to the page; nothing a client sends reaches the log.
"""

from __future__ import annotations

import json
from typing import Any

#: longest text message read, in characters
MAX_CHARS = 4096
#: deepest nesting of arrays and objects read (the page's messages are flat: depth 1)
MAX_DEPTH = 4


class BadMessage(ValueError):
    """A text message that is not one the page sends; the message says why, for the page."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text`` (brackets inside strings not counted); a
    linear scan that never recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def parse_message(text: str | bytes) -> dict[str, Any]:
    """The JSON object in a text message. Raises :class:`BadMessage` when it is too long, too deeply
    nested, not JSON, or not an object."""
    if len(text) > MAX_CHARS:
        raise BadMessage(f"messages are at most {MAX_CHARS} characters")
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise BadMessage("messages must be UTF-8 JSON") from None
    if nesting_depth(text) > MAX_DEPTH:
        raise BadMessage(f"messages are nested at most {MAX_DEPTH} deep")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadMessage("messages must be JSON") from None
    if not isinstance(data, dict):
        raise BadMessage('messages must be JSON objects, e.g. {"type": "start", "avatar": NAME}')
    return data
