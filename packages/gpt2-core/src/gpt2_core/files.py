"""Durable, atomic file writes: a reader never sees a half-written file, and a rename survives a crash.

Written to a temporary name beside the target, then renamed over it (``os.replace`` is atomic on POSIX and
Windows); where a write must survive a power cut too, the file and then its directory are fsynced.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the directory entries of ``path`` (a rename into it) durable; a no-op where unsupported."""
    if sys.platform == "win32":  # directories cannot be opened for fsync there
        return
    with contextlib.suppress(OSError):
        fsync_file(path)


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, through a temporary name."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
