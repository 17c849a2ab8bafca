"""What ``--logger wandb`` wrote offline, read back from W&B's own files, never from the network: its .wandb
transaction logs parsed into W&B's protobuf records (wandb 0.31 ships no Python reader of them). Importable from
every test (the root ``tests/`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

from waiting import DEADLINE


def records(path: Path) -> list:
    """W&B's protobuf records in a .wandb file: a ':W&B' header, then LevelDB's log format (32 KiB blocks of
    chunks, each a CRC-32, a length, and a full/first/middle/last type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc
        pending += chunk
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def finished(path: Path) -> list:
    """The records of a run's .wandb file once it holds the run's exit record: W&B's service may still be
    writing it when ``finish()`` returns."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            out = records(path)
        except (AssertionError, ValueError):  # a chunk still being written
            out = []
        if (out and out[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def readable(path: Path) -> list:
    """The records of a .wandb file as it is now (none while a chunk is still being written)."""
    try:
        return records(path)
    except (AssertionError, ValueError):
        return []


def history(path: Path, wait: bool = True) -> dict[int, dict]:
    """Step -> the row W&B logged there, of the finished run (``wait``) or of the file as it is."""
    rows: dict[int, dict] = {}
    for r in finished(path) if wait else readable(path):
        if r.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            rows.setdefault(items["_step"], {}).update(items)
    return rows


def wandb_files(run_dir: Path) -> list[Path]:
    """The run directory's .wandb files, oldest first: by the second in their directory's name, then by the run
    record's start time (two runs started in the same second sort by their random ids otherwise), or the
    file's last write where it holds no run record (a process killed before W&B wrote one)."""

    def started(path: Path) -> tuple[str, int]:
        run = run_record(path, wait=False)
        ns = run.start_time.ToNanoseconds() if run is not None and run.HasField("start_time") else 0
        return path.parent.name.split("-")[2], ns or path.stat().st_mtime_ns

    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=started)


def run_record(path: Path, wait: bool = True):  # noqa: ANN201 (wandb's protobuf RunRecord)
    """The run record of a .wandb file (id, project, name, config, branch point); None in a file that holds
    none (a process killed before W&B wrote anything)."""
    found = [
        r.run for r in (finished(path) if wait else readable(path)) if r.WhichOneof("record_type") == "run"
    ]
    return found[0] if found else None


def followed_history(run_dir: Path) -> dict[int, dict]:
    """The history W&B shows for the run a run directory logs to now (``RUN_DIR/wandb-run-id``), replaying
    its offline directories in order: a plain resume adds rows, a rewind (``resume_from``: a branch point on
    the run itself) first drops the rows past its step. Waits for the newest directory's run to finish; the
    older ones are read as they are (a killed process's never finishes). Fails when a step is logged twice."""
    paths = wandb_files(run_dir)
    runs: dict[str, dict[int, dict]] = {}
    for i, path in enumerate(paths):
        newest = i == len(paths) - 1
        run = run_record(path, wait=newest)
        if run is None:
            continue
        rows = runs.setdefault(run.run_id, {})
        if run.branch_point.run == run.run_id:
            rows = runs[run.run_id] = {s: r for s, r in rows.items() if s <= run.branch_point.value}
        for step, row in history(path, wait=newest).items():
            assert step not in rows, f"step {step} twice in W&B run {run.run_id}"
            rows[step] = row
    return runs[(run_dir / "wandb-run-id").read_text().strip()]
