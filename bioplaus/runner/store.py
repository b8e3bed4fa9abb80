"""The results store of a sweep: one directory per run, written atomically, and an SQLite index.

Layout of a results directory ``DIR``:

```text
DIR/index.sqlite              the index: one row per run (a cache of the status files)
DIR/runs/<run_id>/config.json  the resolved single-run config (never changes)
DIR/runs/<run_id>/status.json  status, message, timings, final metrics, versions
DIR/runs/<run_id>/metrics.csv  the tidy metrics (rule, seed, epoch, step, split, metric, value)
```

Every file is written to a temporary name in the same folder and renamed over its final
name, so a reader (or a process killed at any moment) sees either the old or the new file,
never half of one. The status files are the source of truth: the index is brought up to date
from them whenever it is read, and is rebuilt from them if it is missing or damaged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from bioplaus.errors import ConfigError

FINISHED = ("done", "diverged", "failed")  # the other statuses: pending, running
INDEX = "index.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    stamp TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    record TEXT NOT NULL
)"""


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def now() -> str:
    """The current UTC time in ISO 8601 form, as status files record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunDir:
    """The folder of one run: its config, status and metrics files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name
        self.config_file = path / "config.json"
        self.status_file = path / "status.json"
        self.metrics_file = path / "metrics.csv"

    def config(self) -> dict[str, Any]:
        """The run's resolved config."""
        return json.loads(self.config_file.read_text())

    def status(self) -> dict[str, Any] | None:
        """The run's status record, or ``None`` if the run was never planned completely."""
        try:
            return json.loads(self.status_file.read_text())
        except FileNotFoundError:
            return None

    def record(self) -> dict[str, Any]:
        """The status record; a run whose status was never written is ``pending``."""
        return self.status() or {"run_id": self.run_id, "status": "pending"}

    def stamp(self) -> str:
        """Identifies the current version of ``status.json`` (inode, modification time and size)."""
        try:
            st = self.status_file.stat()
        except FileNotFoundError:
            return "none"
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def write_status(self, record: Mapping[str, Any]) -> None:
        """Atomically replace the status record."""
        write_json(self.status_file, record)

    def clear_outputs(self) -> None:
        """Remove what an earlier attempt left: metrics, stray temporary files."""
        self.metrics_file.unlink(missing_ok=True)
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class Store:
    """A sweep's results directory: run folders plus an index that is kept in step with them.

    Several processes may read and write one store at once (a sweep and a notebook that loads
    its results, or two sweeps into one directory): files are replaced atomically and every
    index update is one short SQLite transaction.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.index_file = self.root / INDEX

    def run(self, run_id: str) -> RunDir:
        """The folder of run ``run_id`` (which may not exist yet)."""
        return RunDir(self.runs_dir / run_id)

    def run_dirs(self) -> Iterator[RunDir]:
        """Every run folder holding a config (a folder cut short before its config was written is skipped)."""
        if not self.runs_dir.is_dir():
            return
        for path in sorted(self.runs_dir.iterdir()):
            if path.is_dir() and (path / "config.json").is_file():
                yield RunDir(path)

    def plan(self, run_id: str, config: Mapping[str, Any], retry_failed: bool = False) -> str:
        """Make sure a run's folder exists; return its status, ``pending`` if it has to run.

        A finished run (done, diverged, or failed unless ``retry_failed``) keeps its status. A
        run that never started, or was cut short (``running`` when its process died), is
        marked ``pending``.
        """
        run = self.run(run_id)
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.config_file.is_file():
            write_json(run.config_file, config)
        record = run.status()
        status = record["status"] if record else "pending"
        if status in ("done", "diverged") or (status == "failed" and not retry_failed):
            return status
        if record is None or status != "pending":
            run.write_status({"run_id": run_id, "status": "pending", "attempts": (record or {}).get("attempts", 0)})
        return "pending"

    # --- the index -------------------------------------------------------------------------------

    @contextmanager
    def _index(self) -> Iterator[sqlite3.Connection]:
        """A connection to the index; a damaged index file is set aside and rebuilt from the run folders."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
        except sqlite3.OperationalError:  # locked for longer than the timeout, read-only, ...: not damage
            raise
        except sqlite3.DatabaseError:
            self._set_aside_damaged_index()
            db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        """Open the index (WAL journal, so readers never wait for the writer; writers wait up to 60 s)."""
        db = sqlite3.connect(self.index_file, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            db.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _set_aside_damaged_index(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            path = self.index_file.with_name(INDEX + suffix)
            if path.exists():
                os.replace(path, path.with_name(f"{path.name}.damaged-{stamp}"))

    def sync(self, run_ids: Iterable[str] | None = None) -> None:
        """Bring the index up to date with the run folders (all of them, or only ``run_ids``)."""
        dirs = list(self.run_dirs()) if run_ids is None else [self.run(r) for r in run_ids]
        with self._index() as db:
            known = dict(db.execute("SELECT run_id, stamp FROM runs"))
            rows = []
            for run in dirs:
                stamp = run.stamp()
                if known.get(run.run_id) == stamp or not run.config_file.is_file():
                    continue
                record = run.record()
                rows.append((run.run_id, stamp, record["status"], run.config_file.read_text(), json.dumps(record)))
            gone = [] if run_ids is not None else [(r,) for r in known.keys() - {d.run_id for d in dirs}]
            with db:
                db.executemany(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                    "stamp = excluded.stamp, status = excluded.status, record = excluded.record",
                    rows,
                )
                db.executemany("DELETE FROM runs WHERE run_id = ?", gone)

    def records(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``(config, status record)`` of every run, in the order the runs were first indexed.

        Read from the run folders directly where the index cannot be written (a read-only copy of
        the results, or another writer holding it for over a minute).
        """
        if not self.root.is_dir():
            raise ConfigError(f"results folder '{self.root}' does not exist")
        try:
            self.sync()
            with self._index() as db:
                rows = db.execute("SELECT config, record FROM runs ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:
            return [(run.config(), run.record()) for run in self.run_dirs()]
        return [(json.loads(config), json.loads(record)) for config, record in rows]

    def frame(self) -> pd.DataFrame:
        """One row per run: id, status, message, rule, seed, the flattened config, final metrics, timings.

        ``frame.attrs["config"]`` and ``frame.attrs["metrics"]`` name the config and metric columns.
        """
        rows = [_flat_row(config, record) for config, record in self.records()]
        kinds = {k: kind for row in rows for k, (kind, _) in row.items()}
        settings = [k for k, kind in kinds.items() if kind == "config"]
        metrics = [k for k, kind in kinds.items() if kind == "metric"]
        frame = pd.DataFrame(
            [{k: v for k, (_, v) in row.items()} for row in rows],
            columns=[*HEAD_COLUMNS, *settings, *metrics, *RECORD_COLUMNS],
        )
        frame.attrs = {"config": settings, "metrics": metrics}
        return frame

    def metrics(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The tidy metrics of the given runs (default: all), with a leading ``run_id`` column."""
        ids = [run.run_id for run in self.run_dirs()] if run_ids is None else list(run_ids)
        tables = []
        for run_id in ids:
            path = self.run(run_id).metrics_file
            if path.is_file():
                tables.append(pd.read_csv(path).assign(run_id=run_id))
        if not tables:
            return pd.DataFrame(columns=["run_id", "rule", "seed", "epoch", "step", "split", "metric", "value"])
        table = pd.concat(tables, ignore_index=True)
        return table[["run_id", *[c for c in table.columns if c != "run_id"]]]


# --- one row per run -------------------------------------------------------------------------------

HEAD_COLUMNS = ("run_id", "status", "message", "rule", "seed")
RECORD_COLUMNS = ("steps", "train_seconds", "seconds_per_step", "wall_seconds", "attempts", "started", "finished")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for nested tables (empty ones vanish); lists become their JSON text (``[64, 64]``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = json.dumps(value)
        else:
            out[f"{prefix}{key}"] = value
    return out


def _flat_row(config: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Column -> (kind, value) for one run; kind is head, config, metric or record."""
    settings = flatten({k: v for k, v in config.items() if k not in ("rules", "seeds")})
    head = (record["run_id"], record["status"], record.get("message", ""), config["rules"][0], config["seeds"][0])
    return {
        **{k: ("head", v) for k, v in zip(HEAD_COLUMNS, head, strict=True)},
        **{k: ("config", v) for k, v in settings.items()},
        **{k: ("metric", v) for k, v in record.get("final", {}).items()},
        **{k: ("record", record.get(k)) for k in RECORD_COLUMNS},
    }
