"""Scan history: one SQLite file (standard library ``sqlite3``), WAL mode, versioned migrations.

Every image the server scores becomes one row in ``scans``: when (UTC, ISO 8601), what (SHA-256, client
file name, size, dimensions), by which model (model id, dfdetect version), the verdict (score = P(fake),
label, threshold) and the client's optional case/reference id. Images themselves are not stored unless
the server was started with an image folder (then ``image_path`` names a content-addressed copy).

A file that is already something else (another program's SQLite database, or not SQLite at all) is refused
(``NotAScanDatabase``) before anything is written to it.

Concurrency: one connection per ``ScanDB`` behind a lock (so threads of one process serialise), WAL
journal + ``busy_timeout`` (so several server processes can share one file). Each insert is its own
committed transaction: a killed server loses no scan it has answered for.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dfdetect.core.errors import DfdetectError
from dfdetect.core.text import csv_safe

log = logging.getLogger(__name__)


class SchemaError(DfdetectError, RuntimeError):
    """The scan database was written by a newer dfdetect (its schema is unknown here)."""


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE scans (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at    TEXT    NOT NULL,
            sha256        TEXT    NOT NULL,
            file_name     TEXT    NOT NULL,
            size_bytes    INTEGER NOT NULL,
            width         INTEGER,
            height        INTEGER,
            model_id      TEXT    NOT NULL,
            dfdetect_version TEXT NOT NULL,
            score         REAL    NOT NULL,
            label         TEXT    NOT NULL,
            threshold     REAL    NOT NULL,
            case_id       TEXT
        )
        """
    )
    conn.execute("CREATE INDEX scans_sha256 ON scans (sha256)")
    conn.execute("CREATE INDEX scans_case_id ON scans (case_id)")
    conn.execute("CREATE INDEX scans_created_at ON scans (created_at)")


def _v2(conn: sqlite3.Connection) -> None:
    # Which endpoint scored it, which backend ran it, and where a stored copy lives (--store-images).
    conn.execute("ALTER TABLE scans ADD COLUMN source TEXT NOT NULL DEFAULT 'predict'")
    conn.execute("ALTER TABLE scans ADD COLUMN backend TEXT")
    conn.execute("ALTER TABLE scans ADD COLUMN image_path TEXT")


def _v3(conn: sqlite3.Connection) -> None:
    # Face mode: 'faces' (else NULL = whole image) and the per-face result as JSON
    # ({"decided_by", "decision_rule", "faces": [{box, crop, score, label, aligned, roll, warnings}], "warnings"}).
    conn.execute("ALTER TABLE scans ADD COLUMN mode TEXT")
    conn.execute("ALTER TABLE scans ADD COLUMN faces_json TEXT")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3)
"""Schema changes in order; ``MIGRATIONS[k]`` takes a database from version k to k + 1. Append only."""

SCHEMA_VERSION = len(MIGRATIONS)

MAX_ID = 2**63 - 1
"""SQLite's largest integer: no row has an id beyond it (a larger one would not even bind as a parameter)."""


@dataclass
class ScanRecord:
    """One scored image, as stored (``id`` is None until inserted)."""

    created_at: str
    sha256: str
    file_name: str
    size_bytes: int
    width: int | None
    height: int | None
    model_id: str
    dfdetect_version: str
    score: float
    label: str
    threshold: float
    case_id: str | None = None
    source: str = "predict"
    backend: str | None = None
    image_path: str | None = None
    mode: str | None = None
    """'faces' for a face-mode scan; None: the whole image was scored."""
    faces_json: str | None = None
    """Face mode: the per-face result as JSON text (decided_by, decision_rule, faces, warnings)."""
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COLUMNS = tuple(f.name for f in fields(ScanRecord))
_INSERT_COLUMNS = tuple(c for c in COLUMNS if c != "id")


def utc_now() -> str:
    """Current UTC time, ISO 8601 with milliseconds and a ``Z``-free ``+00:00`` offset."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to ``SCHEMA_VERSION``, one transaction per step; returns the final version.

    Refuses a database written by a newer dfdetect (its schema is unknown here).
    """
    conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time
    try:
        current = schema_version(conn)
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"scan database schema version {current} is newer than this dfdetect supports ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            MIGRATIONS[version](conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            log.info("scan database migrated to schema version %d", version + 1)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


class NotAScanDatabase(RuntimeError):
    """The file is not a dfdetect scan history: not SQLite at all, or an SQLite database of something else."""


OUR_TABLES = ("schema_version", "scans")


def check_ours(conn: sqlite3.Connection, path: str | Path) -> None:
    """Refuse (``NotAScanDatabase``) a file that is neither empty nor a scan history, before anything is written:
    opening must not add our tables to someone else's database or switch its journal to WAL."""
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as e:  # "file is not a database", encrypted, ...
        raise NotAScanDatabase(f"{path} is not a dfdetect scan history (not an SQLite database: {e})") from None
    tables = {r[0] for r in rows} - {"sqlite_sequence"}
    if tables and not set(OUR_TABLES) <= tables:
        listed = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
        raise NotAScanDatabase(
            f"{path} is an SQLite database of something else (tables: {listed}), not a dfdetect scan history: "
            "left as it is; give --db a new file or an existing scan history"
        )


class ScanDB:
    """Thread-safe access to the scan history in one SQLite file (a new one, or one this class made)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; we open transactions explicitly where we need them.
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        try:
            check_ours(self._conn, path)
        except NotAScanDatabase:
            self._conn.close()
            raise
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: durable against a killed process (only an OS crash/power cut may
            # lose the last transactions), and far fewer fsyncs than FULL under load.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self.version = migrate(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ScanDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writes ----------------------------------------------------------------------------------
    def add(self, record: ScanRecord) -> int:
        return self.add_many([record])[0]

    def add_many(self, records: Sequence[ScanRecord]) -> list[int]:
        """Insert in one transaction; sets and returns the new ids."""
        if not records:
            return []
        sql = f"INSERT INTO scans ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
        ids: list[int] = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for r in records:
                    cur = self._conn.execute(sql, tuple(getattr(r, c) for c in _INSERT_COLUMNS))
                    r.id = int(cur.lastrowid)
                    ids.append(r.id)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return ids

    def delete(self, scan_id: int) -> ScanRecord | None:
        """Remove one scan; returns it (None when there was no such id)."""
        if not 0 < scan_id <= MAX_ID:
            return None
        with self._lock:
            row = self._conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
            if row is None:
                return None
            self._conn.execute("DELETE FROM scans WHERE id = ?", (scan_id,))
        return _record(row)

    def image_in_use(self, image_path: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM scans WHERE image_path = ? LIMIT 1", (image_path,)).fetchone()
        return row is not None

    # ---- reads -----------------------------------------------------------------------------------
    def get(self, scan_id: int) -> ScanRecord | None:
        if not 0 < scan_id <= MAX_ID:
            return None
        with self._lock:
            row = self._conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        return None if row is None else _record(row)

    def query(
        self,
        case_id: str | None = None,
        sha256: str | None = None,
        label: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[ScanRecord], int]:
        """Newest first; returns (one page of records, total number matching the filters)."""
        where, args = _where(case_id=case_id, sha256=sha256.lower() if sha256 else None, label=label)
        offset = max(0, min(offset, MAX_ID))  # beyond SQLite's integers: past every row, an empty page
        limit = None if limit is None else max(-1, min(limit, MAX_ID))  # negative: no limit, as in SQLite
        with self._lock:
            total = int(self._conn.execute(f"SELECT COUNT(*) FROM scans{where}", args).fetchone()[0])
            page = " LIMIT ? OFFSET ?" if limit is not None else ""
            extra = (limit, offset) if limit is not None else ()
            rows = self._conn.execute(f"SELECT * FROM scans{where} ORDER BY id DESC{page}", (*args, *extra)).fetchall()
        return [_record(r) for r in rows], total

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM scans").fetchone()[0])


def _where(**filters: Any) -> tuple[str, tuple[Any, ...]]:
    active = {k: v for k, v in filters.items() if v is not None}
    if not active:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in active), tuple(active.values())


def _record(row: sqlite3.Row) -> ScanRecord:
    return ScanRecord(**{k: row[k] for k in COLUMNS})


def export_records(records: Iterable[ScanRecord], fmt: str = "csv") -> str:
    """Records as CSV (header + rows), JSON (one array) or JSON lines."""
    rows = [r.to_dict() for r in records]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt != "csv":
        raise ValueError(f"format must be csv, json or jsonl, not {fmt!r}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    w.writeheader()
    # file names and case ids come from whoever uploaded: a cell like "=HYPERLINK(...)" must stay text
    w.writerows({k: csv_safe(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()
