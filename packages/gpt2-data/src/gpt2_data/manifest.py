"""``manifest.json``: what a prepared directory holds and was made with, where an interrupted ``prepare`` resumes,
and whether it is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpt2_core.errors import UserError
from gpt2_core.files import TMP_SUFFIX, write_json_atomic

MANIFEST = "manifest.json"


FORMAT = "gpt2-data/1"


def read_manifest(data_dir: str | Path) -> dict[str, Any] | None:
    """``DIR/manifest.json`` as a dict, or None when the directory has none."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); delete it and prepare again") from e


def start_manifest(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The manifest to continue from: a fresh one, an interrupted one to resume, or a complete one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory (--out)")
    out.mkdir(parents=True, exist_ok=True)
    old = read_manifest(out)
    ours = sorted(out.glob("*.bin")) + sorted(out.glob("*" + TMP_SUFFIX))
    if overwrite:
        for path in ours + [out / MANIFEST]:
            path.unlink(missing_ok=True)
        old = None
    elif old is None and ours:
        raise UserError(
            f"{out}: holds .bin shards but no {MANIFEST}; choose an empty --out or pass --overwrite"
        )
    if old is not None:
        differs = sorted(k for k in identity if old.get(k) != identity[k])
        if differs:
            raise UserError(
                f"{out}: was prepared with other settings ({', '.join(differs)} differ); "
                "choose another --out or pass --overwrite"
            )
        for tmp in out.glob("*" + TMP_SUFFIX):  # half-written shards of the interrupted run
            tmp.unlink()
        return old
    fresh = {**identity, "complete": False, "shards": []}
    write_json_atomic(
        out / MANIFEST, fresh
    )  # from now on the directory is ours to resume, even before a first shard
    return fresh
