"""`RunRecord`: the one owner of a run's `result.json` (schema, writing, reading, validation, is_done_for).

Every other module reads and writes result records through this class. A record carries a schema
version; records without one were written before the field existed and have the same layout
(version 1). Configs that lack the later `resize`, `precision` and `decode` fields are read with the values
those runs used (`LEGACY_RUN_FIELDS`: PIL resize, bf16, PIL decoding). A file that is truncated, is not a
result record, or comes from a newer schema raises `RecordError` naming the file; `scan_records` reports such files by
name and goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vapt.errors import DataLayoutError
from vapt.io import write_json_atomic

SCHEMA_VERSION = 1
RECORD_NAME = "result.json"
# The one status vocabulary: a run is running, was interrupted (checkpoint only), finished or failed.
RUNNING, INTERRUPTED, FINISHED, FAILED = "running", "interrupted", "finished", "failed"
STATUSES: tuple[str, ...] = (RUNNING, INTERRUPTED, FINISHED, FAILED)
NON_FINITE = "non_finite_loss"  # failure kind of a run whose loss became NaN or infinite (final, not retried)
# Config fields a record may lack because it predates them, and how those runs were made: PIL's resize, bf16,
# PIL's JPEG decoding.
LEGACY_RUN_FIELDS: dict[str, str] = {"resize": "pil", "precision": "bf16", "decode": "pil"}
OPTIONAL_JOB_FIELDS = ("executor", "slurm_job_id", "slurm_array_index")  # written only when known
REQUIRED_CONFIG = ("backbone", "method", "data", "seed", "lr", "wd", "epochs")


class RecordError(DataLayoutError):
    """A result.json that cannot be read as a run record (truncated, foreign, or from a newer schema)."""


@dataclass
class RunRecord:
    """What one run leaves behind: its config, per-epoch log, final top-1 per split, counts and status."""

    run_id: str
    config: dict[str, Any]
    status: str = RUNNING
    epochs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    method_config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    failure: str | None = None
    executor: str | None = None  # submitit's executor that ran it (slurm, local), when it ran in a job
    slurm_job_id: str | None = None  # the Slurm job (ARRAY_INDEX for array tasks) that last trained it
    slurm_array_index: int | None = None
    schema: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        """Whether the run trained to the end and has its final scores."""
        return self.status == FINISHED

    @property
    def is_done(self) -> bool:
        """Finished, or failed for good (non-finite loss): such a run is not run again."""
        return self.status == FINISHED or self.failure == NON_FINITE

    def made_with(self, config: Any) -> bool:
        """Whether this run was made with the resize mode and precision of `config` (a `TrainConfig`)."""
        resolved = config.resolved()
        return all(self.config.get(name) == getattr(resolved, name) for name in LEGACY_RUN_FIELDS)

    def is_done_for(self, config: Any) -> bool:
        """The answer to "is the run of `config` done?": `is_done`, and made with its resize mode and precision."""
        return self.is_done and self.made_with(config)

    def score(self, split: str) -> float | None:
        """The last-epoch top-1 (%) on `split`, or None."""
        return self.final.get(split)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to result.json (error and job fields only when set)."""
        data = dataclasses.asdict(self)
        for key in ("error", "failure", *OPTIONAL_JOB_FIELDS):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "result record") -> RunRecord:
        """A validated record from a parsed JSON object; RecordError names `source` and what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise RecordError(f"{source} is not a run record (expected a JSON object with a 'config' object)")
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise RecordError(f"{source} has schema {schema!r}, newer than this vapt's {SCHEMA_VERSION}; "
                              f"upgrade vapt to read it")
        missing = [k for k in REQUIRED_CONFIG if k not in data["config"]]
        if missing:
            raise RecordError(f"{source}: config lacks {', '.join(missing)}")
        status = data.get("status", RUNNING)
        if status not in STATUSES:
            raise RecordError(f"{source}: status {status!r} is not one of {', '.join(STATUSES)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("run_id", "")
        values["config"] = {**data["config"], **{k: v for k, v in LEGACY_RUN_FIELDS.items()
                                                 if data["config"].get(k) is None}}
        values["final"] = dict(values.get("final") or {})
        values["params"] = dict(values.get("params") or {})
        values["schema"] = SCHEMA_VERSION
        return cls(**values)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the record to `path` atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunRecord:
        """The record in `path`; RecordError naming the file when it is missing, truncated or foreign."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RecordError(f"result record {path} cannot be read as JSON ({err})") from err
        return cls.from_dict(data, source=f"result record {path}")

    @classmethod
    def read_if_present(cls, path: str | os.PathLike) -> RunRecord | None:
        """The record in `path`, or None when there is no file (a bad file still raises RecordError)."""
        return cls.read(path) if Path(path).is_file() else None



def record_paths(runs_dir: str | os.PathLike) -> Iterator[Path]:
    """Every result.json under `runs_dir`, in sorted order."""
    return iter(sorted(Path(runs_dir).rglob(RECORD_NAME)))


def scan_records(runs_dir: str | os.PathLike, warn: bool = True) -> list[tuple[Path, RunRecord]]:
    """(path, record) of every readable result.json under `runs_dir`; unreadable ones are reported by name."""
    import sys

    found = []
    for path in record_paths(runs_dir):
        try:
            found.append((path, RunRecord.read(path)))
        except RecordError as err:
            if warn:
                print(f"warning: skipped {err}", file=sys.stderr)
    return found


__all__ = [
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "LEGACY_RUN_FIELDS",
    "NON_FINITE",
    "RUNNING",
    "SCHEMA_VERSION",
    "STATUSES",
    "RecordError",
    "RunRecord",
    "record_paths",
    "scan_records",
]
