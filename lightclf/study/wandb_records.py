"""Read W&B's local transaction logs (``run-<id>.wandb``) without the network.

Offline runs keep everything in this file (leveldb-log framing of protobuf ``Record``s);
reading it lets tests and the report check what W&B will hold after ``wandb sync``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["iter_records", "read_run"]

_HEADER = b":W&B"
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _iter_payloads(data: bytes) -> Iterator[bytes]:
    if not data.startswith(_HEADER):
        raise ValueError("not a W&B transaction log")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        block_left = _BLOCK - pos % _BLOCK
        if block_left < 7:  # block trailer padding
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:  # zero padding or a torn tail from a killed process
            break


def iter_records(path: str | Path) -> Iterator[Any]:
    """Each finished run of a W&B group as the records a study archives."""
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in _iter_payloads(Path(path).read_bytes()):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # a torn record at the end of a killed run's log
            break
        yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: str | Path) -> dict[str, Any]:
    """Run id, config, summary and history rows of one ``.wandb`` file (values JSON-decoded)."""
    run: dict[str, Any] = {"id": None, "config": {}, "summary": {}, "history": []}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["id"] = record.run.run_id
            run["group"] = record.run.run_group
            run["tags"] = list(record.run.tags)
            for item in record.run.config.update:
                run["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
    return run
