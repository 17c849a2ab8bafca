"""Bytes to text for every reader of user input: UTF-8, with undecodable bytes replaced or refused, and counted.

Web text and old files often hold bytes that are not UTF-8. By default each undecodable sequence becomes
U+FFFD (Python's ``errors="replace"``, the WHATWG decoder's behaviour), the bytes replaced are counted per
source (a file, ``--prompt``, stdin), and the reader reports one warning line per source;
``--encoding-errors strict`` makes the first such byte a one-line error naming the source instead.
"""

from __future__ import annotations

import codecs
import sys
import threading
from typing import Any

from gpt2_core.errors import UserError

ENCODING_ERRORS = ("replace", "strict")
"""Values of ``--encoding-errors``."""

_counter = threading.local()


def _count_and_replace(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeDecodeError):
        raise e
    _counter.bytes += e.end - e.start
    return "\ufffd", e.end


codecs.register_error("gpt2-count-replace", _count_and_replace)


def check_encoding_errors(value: str, flag: str = "--encoding-errors") -> str:
    """``value`` if it is a valid ``--encoding-errors`` setting; raises ``UserError`` otherwise."""
    if value not in ENCODING_ERRORS:
        raise UserError(f"{flag} must be {' or '.join(ENCODING_ERRORS)}, got {value!r}")
    return value


class Utf8Decoder:
    """Decodes bytes from named sources; ``replaced`` maps each source to its count of replaced bytes.

    ``errors``: ``replace`` (U+FFFD, counted) or ``strict`` (``UserError`` naming the source and offset).
    One decoder may serve several threads; each source should be decoded by one thread at a time.
    """

    def __init__(self, errors: str = "replace") -> None:
        self.errors = check_encoding_errors(errors)
        self.replaced: dict[str, int] = {}

    def decode(self, data: bytes, source: str, offset: int = 0) -> str:
        """``data`` as text. ``offset``: where ``data`` starts in ``source`` (for the error message)."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            if self.errors == "strict":
                raise UserError(
                    f"{source}: byte {offset + e.start} is not UTF-8 ({e.reason}); fix the input, or pass "
                    "--encoding-errors replace to read such bytes as U+FFFD"
                ) from None
        _counter.bytes = 0
        text = data.decode("utf-8", errors="gpt2-count-replace")
        self.replaced[source] = self.replaced.get(source, 0) + _counter.bytes
        return text

    def decode_os_text(self, text: str, source: str) -> str:
        """Text that Python decoded from the OS with ``surrogateescape`` (``sys.argv``; stdin once
        :func:`escape_stdin` ran), its undecodable bytes decoded again by this decoder's rule."""
        return self.decode(text.encode("utf-8", "surrogateescape"), source)

    def decode_tree(self, obj: Any, source: str) -> Any:
        """``obj`` with every ``bytes`` inside it (dicts and lists, at any depth) decoded."""
        if isinstance(obj, bytes):
            return self.decode(obj, source)
        if isinstance(obj, dict):
            return {k: self.decode_tree(v, source) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.decode_tree(v, source) for v in obj]
        return obj

    def warn(self, source: str) -> None:
        """One warning line on stderr when ``source`` had bytes replaced."""
        n = self.replaced.get(source, 0)
        if n:
            print(
                f"warning: {source}: {n} undecodable byte{'s' * (n != 1)} read as U+FFFD "
                "(--encoding-errors strict refuses them)",
                file=sys.stderr,
            )


def escape_stdin() -> None:
    """Make ``sys.stdin`` hand undecodable bytes on as lone surrogates (for ``decode_os_text``) instead of
    raising ``UnicodeDecodeError`` in the middle of a read."""
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(encoding="utf-8", errors="surrogateescape")
