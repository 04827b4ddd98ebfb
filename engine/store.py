"""The one SQLite file behind an engine: the only module that speaks SQL.

Many processes (CLI calls, a console, a server) may open the same file at once: the
database runs in WAL mode, every connection waits on a busy database instead of failing,
and every write is one `BEGIN IMMEDIATE` transaction, so a process killed half-way leaves
the previous state intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from .egress import EgressPolicy
from .errors import InvalidInput, NotFound
from .limits import FIELDS, Limits
from .outbound import OutboundParameter, OutboundSetting

SCHEMA_VERSION = 3
DEFAULT_NAMESPACE = "default"
DEFAULT_TRACE_RETENTION = 10_000
BUSY_TIMEOUT_MS = 30_000
ROUTING_MODES = ("host", "path")
TAIL_SCOPES = ("worker", "namespace", "dispatcher")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Namespace:
    name: str
    routing: str
    defaults: Limits
    created_at: int
    dispatch_worker: str | None = None
    outbound: OutboundSetting | None = None
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "routing": self.routing,
            "defaults": self.defaults.as_dict(),
            "createdAt": self.created_at,
            "dispatchWorker": self.dispatch_worker,
            "outbound": self.outbound.as_dict() if self.outbound else None,
            "egress": self.egress.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Namespace":
        """The inverse of `as_dict` (a namespace as the admin API sends it)."""
        outbound = data.get("outbound")
        egress = data.get("egress") or {}
        return cls(
            name=data["name"],
            routing=data["routing"],
            defaults=Limits.from_dict(dict(data["defaults"])),
            created_at=data["createdAt"],
            dispatch_worker=data.get("dispatchWorker"),
            outbound=OutboundSetting.parse(
                outbound["service"], [(p["name"], p.get("template")) for p in outbound["parameters"]]
            ) if outbound else None,
            egress=EgressPolicy.parse(egress.get("allow", ()), egress.get("block", ())),
        )


@dataclass(frozen=True)
class TailConsumer:
    """`consumer` receives the trace items of `worker` (scope "worker"), of every Worker in the
    namespace ("namespace"), or of the namespace's dispatcher and the Workers it dispatches to
    ("dispatcher")."""

    namespace: str
    consumer: str
    scope: str
    worker: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "consumer": self.consumer, "scope": self.scope, "worker": self.worker}


@dataclass(frozen=True)
class WorkerVersion:
    """One deployed version of a worker; `Worker` is the version currently serving."""

    namespace: str
    name: str
    version: int
    sha256: str
    size: int
    abi: str
    tags: tuple[str, ...]
    vars: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    message: str = ""
    current: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "abi": self.abi,
            "tags": list(self.tags),
            "vars": dict(self.vars),
            "createdAt": self.created_at,
            "message": self.message,
            "current": self.current,
        }


@dataclass(frozen=True)
class Worker(WorkerVersion):
    first_deployed_at: int = 0


def _migration_1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["namespaces"].create(
        {"name": str, "routing": str, "cpu_ms": int, "memory_mb": int, "sub_requests": int, "wall_ms": int, "created_at": int},
        pk="name",
    )
    db["modules"].create({"sha256": str, "size": int, "bytes": bytes, "created_at": int}, pk="sha256")
    db["workers"].create(
        {"id": int, "namespace": str, "name": str, "current_version": int, "created_at": int, "updated_at": int},
        pk="id",
        foreign_keys=[("namespace", "namespaces", "name")],
    )
    db["workers"].create_index(["namespace", "name"], unique=True)
    db["versions"].create(
        {
            "id": int,
            "worker_id": int,
            "version": int,
            "sha256": str,
            "abi": str,
            "tags": str,
            "vars": str,
            "message": str,
            "created_at": int,
        },
        pk="id",
        foreign_keys=[("worker_id", "workers", "id"), ("sha256", "modules", "sha256")],
    )
    db["versions"].create_index(["worker_id", "version"], unique=True)
    db["tag_limits"].create(
        {"tag": str, "cpu_ms": int, "memory_mb": int, "sub_requests": int, "wall_ms": int, "updated_at": int}, pk="tag"
    )
    db["traces"].create(
        {
            "id": int,
            "origin": str,
            "namespace": str,
            "script_name": str,
            "outcome": str,
            "event_timestamp": int,
            "item": str,
        },
        pk="id",
    )
    db["traces"].create_index(["namespace", "script_name"])
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["namespaces"].insert(
        {"name": DEFAULT_NAMESPACE, "routing": "host", "created_at": now_ms()},
    )


# Tables whose rows the engine caches between requests. Any write to them bumps
# config_version (by trigger, so every writer and every process is covered); trace
# writes do not, so storing traces no longer invalidates the engine's config cache.
CONFIG_TABLES = ("namespaces", "workers", "versions", "tag_limits", "settings")


def _config_triggers(db: sqlite_utils.Database, table: str) -> None:
    for op in ("INSERT", "UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER {table}_{op.lower()}_config AFTER {op} ON {table} "
            "BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END"
        )


def _migration_2(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE config_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
    db.execute("INSERT INTO config_version (id, version) VALUES (1, 0)")
    for table in CONFIG_TABLES:
        _config_triggers(db, table)


def _migration_3(db: sqlite_utils.Database) -> None:
    """The Worker protocol's platform settings: dispatch Worker, Outbound Worker, egress, tail consumers."""
    for column in ("dispatch_worker", "outbound_service", "outbound_parameters", "egress_allow", "egress_block"):
        db.execute(f"ALTER TABLE namespaces ADD COLUMN {column} TEXT")
    db["tail_consumers"].create(
        {"id": int, "namespace": str, "consumer": str, "scope": str, "worker": str, "created_at": int},
        pk="id",
        foreign_keys=[("namespace", "namespaces", "name")],
    )
    db.execute("CREATE UNIQUE INDEX tail_consumers_unique ON tail_consumers (namespace, consumer, scope, COALESCE(worker, ''))")
    _config_triggers(db, "tail_consumers")


METERED_TABLE = "metered_modules"

MIGRATIONS = {1: _migration_1, 2: _migration_2, 3: _migration_3}


class Store:
    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self.now_ms = clock
        if self.path.exists() and self.path.is_dir():
            raise InvalidInput(f"database path {self.path} is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self._migrate()
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {METERED_TABLE} "
                "(sha256 TEXT PRIMARY KEY, scheme TEXT NOT NULL, bytes BLOB NOT NULL, digest TEXT NOT NULL)"
            )
        except sqlite3.DatabaseError as error:
            raise InvalidInput(f"{self.path} is not a wasmdeck database ({error})") from error

    # -- connections and transactions -------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        database = getattr(self._local, "db", None)
        if database is None:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = NORMAL")
            database = sqlite_utils.Database(connection)
            self._local.db = database
            with self._lock:
                self._connections.append(connection)
        return database

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One IMMEDIATE transaction: all of it lands, or none of it."""
        database = self.db
        database.execute("BEGIN IMMEDIATE")
        try:
            yield database
        except BaseException:
            database.execute("ROLLBACK")
            raise
        else:
            database.execute("COMMIT")

    def _migrate(self) -> None:
        database = self.db
        if database.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            database.execute("PRAGMA journal_mode = WAL")
        with self.write() as db:
            current = 0
            if db["meta"].exists():
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                current = int(row[0]) if row else 0
            elif db.table_names():
                raise InvalidInput(f"{self.path} is an SQLite database but not a wasmdeck one")
            if current > SCHEMA_VERSION:
                raise InvalidInput(
                    f"{self.path} has schema version {current}, newer than this wasmdeck understands ({SCHEMA_VERSION})"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](db)
                db["meta"].upsert({"key": "schema_version", "value": str(version)}, pk="key")

    def config_version(self) -> int:
        """Bumped by every write to a config table (see CONFIG_TABLES)."""
        return self.db.execute("SELECT version FROM config_version WHERE id = 1").fetchone()[0]

    def schema_version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                try:
                    connection.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # -- settings ---------------------------------------------------------------------

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self.write() as db:
            db["settings"].upsert({"key": key, "value": value}, pk="key")

    # -- namespaces -------------------------------------------------------------------

    def _namespace_from_row(self, row: dict[str, Any]) -> Namespace:
        outbound = None
        if row.get("outbound_service"):
            outbound = OutboundSetting(
                row["outbound_service"],
                tuple(OutboundParameter(name, template) for name, template in json.loads(row["outbound_parameters"] or "[]")),
            )
        egress = EgressPolicy.parse(json.loads(row.get("egress_allow") or "[]"), json.loads(row.get("egress_block") or "[]"))
        return Namespace(
            name=row["name"],
            routing=row["routing"],
            defaults=Limits(**{name: row[name] for name in FIELDS}),
            created_at=row["created_at"],
            dispatch_worker=row.get("dispatch_worker"),
            outbound=outbound,
            egress=egress,
        )

    def _require_namespace(self, db: sqlite_utils.Database, name: str) -> None:
        if not db.execute("SELECT 1 FROM namespaces WHERE name = ?", [name]).fetchone():
            raise NotFound(f"namespace {name!r} does not exist")

    def _require_worker(self, db: sqlite_utils.Database, namespace: str, name: str, role: str) -> None:
        if not db.execute("SELECT 1 FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone():
            raise NotFound(f"{role} {name!r} is not a worker in namespace {namespace!r}; deploy it first")

    def set_dispatch_worker(self, namespace: str, worker: str | None) -> Namespace:
        with self.write() as db:
            self._require_namespace(db, namespace)
            if worker is not None:
                self._require_worker(db, namespace, worker, "dispatch Worker")
            db["namespaces"].update(namespace, {"dispatch_worker": worker})
        return self.namespace(namespace)

    def set_outbound(self, namespace: str, outbound: OutboundSetting | None) -> Namespace:
        with self.write() as db:
            self._require_namespace(db, namespace)
            if outbound is None:
                db["namespaces"].update(namespace, {"outbound_service": None, "outbound_parameters": None})
            else:
                self._require_worker(db, namespace, outbound.service, "Outbound Worker")
                parameters = json.dumps([[p.name, p.template] for p in outbound.parameters])
                db["namespaces"].update(namespace, {"outbound_service": outbound.service, "outbound_parameters": parameters})
        return self.namespace(namespace)

    def set_egress(self, namespace: str, egress: EgressPolicy) -> Namespace:
        data = egress.as_dict()
        with self.write() as db:
            self._require_namespace(db, namespace)
            db["namespaces"].update(namespace, {"egress_allow": json.dumps(data["allow"]), "egress_block": json.dumps(data["block"])})
        return self.namespace(namespace)

    def tail_consumers(self, namespace: str | None = None) -> list[TailConsumer]:
        sql, params = "SELECT namespace, consumer, scope, worker FROM tail_consumers", []
        if namespace is not None:
            sql += " WHERE namespace = ?"
            params.append(namespace)
        rows = self.db.execute(sql + " ORDER BY namespace, consumer, scope, worker", params).fetchall()
        return [TailConsumer(*row) for row in rows]

    def add_tail_consumer(self, consumer: TailConsumer) -> TailConsumer:
        if consumer.scope not in TAIL_SCOPES:
            raise InvalidInput(f"tail scope {consumer.scope!r} is not one of {', '.join(TAIL_SCOPES)}")
        with self.write() as db:
            self._require_namespace(db, consumer.namespace)
            self._require_worker(db, consumer.namespace, consumer.consumer, "tail consumer")
            if consumer.scope == "worker":
                self._require_worker(db, consumer.namespace, consumer.worker or "", "tailed worker")
            exists = db.execute(
                "SELECT 1 FROM tail_consumers WHERE namespace = ? AND consumer = ? AND scope = ? AND COALESCE(worker, '') = ?",
                [consumer.namespace, consumer.consumer, consumer.scope, consumer.worker or ""],
            ).fetchone()
            if not exists:
                db["tail_consumers"].insert({**consumer.as_dict(), "created_at": self.now_ms()})
        return consumer

    def remove_tail_consumer(self, consumer: TailConsumer) -> None:
        with self.write() as db:
            deleted = db.execute(
                "DELETE FROM tail_consumers WHERE namespace = ? AND consumer = ? AND scope = ? AND COALESCE(worker, '') = ?",
                [consumer.namespace, consumer.consumer, consumer.scope, consumer.worker or ""],
            ).rowcount
            if not deleted:
                raise NotFound(f"{consumer.consumer!r} is not a tail consumer of that {consumer.scope} in namespace {consumer.namespace!r}")

    def namespaces(self) -> list[Namespace]:
        return [self._namespace_from_row(row) for row in self.db["namespaces"].rows_where(order_by="name")]

    def namespace(self, name: str) -> Namespace:
        rows = list(self.db["namespaces"].rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"namespace {name!r} does not exist")
        return self._namespace_from_row(rows[0])

    def create_namespace(self, name: str, routing: str = "host", defaults: Limits | None = None) -> Namespace:
        if routing not in ROUTING_MODES:
            raise InvalidInput(f"routing {routing!r} is not one of host, path")
        with self.write() as db:
            if db.execute("SELECT 1 FROM namespaces WHERE name = ?", [name]).fetchone():
                raise InvalidInput(f"namespace {name!r} already exists")
            db["namespaces"].insert(
                {"name": name, "routing": routing, **{f: getattr(defaults or Limits(), f) for f in FIELDS}, "created_at": self.now_ms()}
            )
        return self.namespace(name)

    def update_namespace(self, name: str, routing: str | None = None, defaults: Limits | None = None, clear: tuple[str, ...] = ()) -> Namespace:
        if routing is not None and routing not in ROUTING_MODES:
            raise InvalidInput(f"routing {routing!r} is not one of host, path")
        with self.write() as db:
            if not db.execute("SELECT 1 FROM namespaces WHERE name = ?", [name]).fetchone():
                raise NotFound(f"namespace {name!r} does not exist")
            changes: dict[str, Any] = {}
            if routing is not None:
                changes["routing"] = routing
            for f in FIELDS:
                if defaults is not None and getattr(defaults, f) is not None:
                    changes[f] = getattr(defaults, f)
                if f in clear:
                    changes[f] = None
            if changes:
                db["namespaces"].update(name, changes)
        return self.namespace(name)

    def delete_namespace(self, name: str) -> None:
        if name == DEFAULT_NAMESPACE:
            raise InvalidInput("the default namespace cannot be deleted")
        with self.write() as db:
            if not db.execute("SELECT 1 FROM namespaces WHERE name = ?", [name]).fetchone():
                raise NotFound(f"namespace {name!r} does not exist")
            count = db.execute("SELECT COUNT(*) FROM workers WHERE namespace = ?", [name]).fetchone()[0]
            if count:
                raise InvalidInput(f"namespace {name!r} still has {count} worker(s); delete them first")
            db.execute("DELETE FROM tail_consumers WHERE namespace = ?", [name])
            db.execute("DELETE FROM namespaces WHERE name = ?", [name])

    # -- workers and versions ---------------------------------------------------------

    _VERSION_SELECT = """
        SELECT w.namespace, w.name, v.version, v.sha256, m.size, v.abi, v.tags, v.vars, v.created_at,
               v.message, (v.version = w.current_version) AS current, w.created_at AS first_deployed_at
        FROM workers w JOIN versions v ON v.worker_id = w.id JOIN modules m ON m.sha256 = v.sha256
    """

    @staticmethod
    def _version_from_row(row: tuple[Any, ...], cls: type[WorkerVersion] = WorkerVersion) -> Any:
        values = dict(
            namespace=row[0],
            name=row[1],
            version=row[2],
            sha256=row[3],
            size=row[4],
            abi=row[5],
            tags=tuple(json.loads(row[6])),
            vars=json.loads(row[7]),
            created_at=row[8],
            message=row[9] or "",
            current=bool(row[10]),
        )
        if cls is Worker:
            values["first_deployed_at"] = row[11]
        return cls(**values)

    def deploy(
        self,
        namespace: str,
        name: str,
        module: bytes,
        sha256: str,
        abi: str,
        tags: tuple[str, ...],
        variables: dict[str, str],
        message: str = "",
    ) -> Worker:
        """Store the module (once per sha256) and make a new version current, atomically."""
        with self.write() as db:
            if not db.execute("SELECT 1 FROM namespaces WHERE name = ?", [namespace]).fetchone():
                raise NotFound(f"namespace {namespace!r} does not exist")
            if not db.execute("SELECT 1 FROM modules WHERE sha256 = ?", [sha256]).fetchone():
                db["modules"].insert({"sha256": sha256, "size": len(module), "bytes": module, "created_at": self.now_ms()})
            self._new_version(db, namespace, name, sha256, abi, tags, variables, message)
        return self.worker(namespace, name)

    def _new_version(
        self,
        db: sqlite_utils.Database,
        namespace: str,
        name: str,
        sha256: str,
        abi: str,
        tags: tuple[str, ...],
        variables: dict[str, str],
        message: str,
    ) -> int:
        stamp = self.now_ms()
        row = db.execute("SELECT id FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone()
        if row:
            worker_id = row[0]
        else:
            worker_id = db["workers"].insert(
                {"namespace": namespace, "name": name, "current_version": 0, "created_at": stamp, "updated_at": stamp}
            ).last_pk
        version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE worker_id = ?", [worker_id]).fetchone()[0]
        db["versions"].insert(
            {
                "worker_id": worker_id,
                "version": version,
                "sha256": sha256,
                "abi": abi,
                "tags": json.dumps(list(tags)),
                "vars": json.dumps(variables, sort_keys=True),
                "message": message,
                "created_at": stamp,
            }
        )
        db.execute("UPDATE workers SET current_version = ?, updated_at = ? WHERE id = ?", [version, stamp, worker_id])
        return version

    def update_settings(
        self, namespace: str, name: str, tags: tuple[str, ...] | None, variables: dict[str, str] | None, message: str
    ) -> Worker:
        """New tags and/or vars become a new version running the same module."""
        with self.write() as db:
            current = self._current_row(db, namespace, name)
            self._new_version(
                db,
                namespace,
                name,
                current.sha256,
                current.abi,
                current.tags if tags is None else tags,
                current.vars if variables is None else variables,
                message,
            )
        return self.worker(namespace, name)

    def _current_row(self, db: sqlite_utils.Database, namespace: str, name: str) -> Worker:
        row = db.execute(
            self._VERSION_SELECT + " WHERE w.namespace = ? AND w.name = ? AND v.version = w.current_version",
            [namespace, name],
        ).fetchone()
        if row is None:
            raise NotFound(f"worker {name!r} does not exist in namespace {namespace!r}")
        return self._version_from_row(row, Worker)

    def worker(self, namespace: str, name: str) -> Worker:
        return self._current_row(self.db, namespace, name)

    def find_worker(self, namespace: str, name: str) -> Worker | None:
        try:
            return self.worker(namespace, name)
        except NotFound:
            return None

    def workers(self, namespace: str | None = None, tags: tuple[str, ...] = ()) -> list[Worker]:
        sql = self._VERSION_SELECT + " WHERE v.version = w.current_version"
        params: list[Any] = []
        if namespace is not None:
            sql += " AND w.namespace = ?"
            params.append(namespace)
        sql += " ORDER BY w.namespace, w.name"
        found = [self._version_from_row(row, Worker) for row in self.db.execute(sql, params).fetchall()]
        return [w for w in found if all(tag in w.tags for tag in tags)]

    def versions(self, namespace: str, name: str) -> list[WorkerVersion]:
        rows = self.db.execute(
            self._VERSION_SELECT + " WHERE w.namespace = ? AND w.name = ? ORDER BY v.version", [namespace, name]
        ).fetchall()
        if not rows:
            raise NotFound(f"worker {name!r} does not exist in namespace {namespace!r}")
        return [self._version_from_row(row) for row in rows]

    def rollback(self, namespace: str, name: str, version: int) -> Worker:
        """Serve an earlier version again; recorded as a new version so history only grows."""
        with self.write() as db:
            current = self._current_row(db, namespace, name)
            row = db.execute(
                self._VERSION_SELECT + " WHERE w.namespace = ? AND w.name = ? AND v.version = ?",
                [namespace, name, version],
            ).fetchone()
            if row is None:
                raise NotFound(f"worker {name!r} has no version {version} (it has 1 to {current.version})")
            target = self._version_from_row(row)
            self._new_version(
                db, namespace, name, target.sha256, target.abi, target.tags, target.vars, f"rollback to version {version}"
            )
        return self.worker(namespace, name)

    def delete_worker(self, namespace: str, name: str) -> None:
        with self.write() as db:
            row = db.execute("SELECT id FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone()
            if row is None:
                raise NotFound(f"worker {name!r} does not exist in namespace {namespace!r}")
            db.execute("DELETE FROM versions WHERE worker_id = ?", [row[0]])
            db.execute("DELETE FROM workers WHERE id = ?", [row[0]])
            db.execute("DELETE FROM modules WHERE sha256 NOT IN (SELECT DISTINCT sha256 FROM versions)")
            db.execute(f"DELETE FROM {METERED_TABLE} WHERE sha256 NOT IN (SELECT sha256 FROM modules)")

    # The metered form of each module (see engine.metering), kept beside it so a restarted engine
    # does not meter again; `scheme` names the metering version that made it. The table is not part
    # of the schema migrations: it only caches what can be made again from `modules`.
    def metered_module(self, sha256: str, scheme: str) -> bytes | None:
        """None when there is none for this scheme, or when its bytes no longer match their digest."""
        row = self.db.execute(
            f"SELECT bytes, digest FROM {METERED_TABLE} WHERE sha256 = ? AND scheme = ?", [sha256, scheme]
        ).fetchone()
        if row is None or hashlib.sha256(row[0]).hexdigest() != row[1]:
            return None
        return bytes(row[0])

    def save_metered_module(self, sha256: str, scheme: str, metered: bytes) -> None:
        with self.write() as db:
            db.execute(
                f"INSERT OR REPLACE INTO {METERED_TABLE} (sha256, scheme, bytes, digest) VALUES (?, ?, ?, ?)",
                [sha256, scheme, metered, hashlib.sha256(metered).hexdigest()],
            )

    def module_bytes(self, sha256: str) -> bytes:
        row = self.db.execute("SELECT bytes FROM modules WHERE sha256 = ?", [sha256]).fetchone()
        if row is None:
            raise NotFound(f"module {sha256} is not stored")
        return bytes(row[0])

    # -- limits -----------------------------------------------------------------------

    def tag_limits(self) -> dict[str, Limits]:
        return {
            row["tag"]: Limits(**{name: row[name] for name in FIELDS})
            for row in self.db["tag_limits"].rows_where(order_by="tag")
        }

    def set_tag_limits(self, tag: str, limits: Limits, clear: tuple[str, ...] = ()) -> Limits:
        with self.write() as db:
            row = db.execute("SELECT cpu_ms, memory_mb, sub_requests, wall_ms FROM tag_limits WHERE tag = ?", [tag]).fetchone()
            merged = dict(zip(FIELDS, row)) if row else dict.fromkeys(FIELDS)
            for name in FIELDS:
                if getattr(limits, name) is not None:
                    merged[name] = getattr(limits, name)
                if name in clear:
                    merged[name] = None
            db["tag_limits"].upsert({"tag": tag, **merged, "updated_at": self.now_ms()}, pk="tag")
        return Limits(**merged)

    def delete_tag_limits(self, tag: str) -> None:
        with self.write() as db:
            if not db.execute("SELECT 1 FROM tag_limits WHERE tag = ?", [tag]).fetchone():
                raise NotFound(f"no limits are set for tag {tag!r}")
            db.execute("DELETE FROM tag_limits WHERE tag = ?", [tag])

    # -- traces -----------------------------------------------------------------------

    def trace_retention(self) -> int:
        return int(self.get_setting("trace_retention", str(DEFAULT_TRACE_RETENTION)) or DEFAULT_TRACE_RETENTION)

    def insert_traces(self, origin: str, items: list[dict[str, Any]], retention: int | None = None) -> None:
        if not items:
            return
        keep = self.trace_retention() if retention is None else retention
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        rows = [
            (origin, item.get("dispatchNamespace"), item.get("scriptName"), item.get("outcome"), item.get("eventTimestamp"), dumps(item))
            for item in items
        ]
        with self.write() as db:
            db.conn.executemany(
                "INSERT INTO traces (origin, namespace, script_name, outcome, event_timestamp, item) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("DELETE FROM traces WHERE id <= (SELECT MAX(id) FROM traces) - ?", [keep])

    def traces_after(
        self,
        after_id: int = 0,
        *,
        namespace: str | None = None,
        worker: str | None = None,
        exclude_origin: str | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, dict[str, Any]]]:
        sql, params = "SELECT id, item FROM traces WHERE id > ?", [after_id]
        sql, params = self._trace_where(sql, params, namespace, worker)
        if exclude_origin:
            sql += " AND origin != ?"
            params.append(exclude_origin)
        rows = self.db.execute(sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def traces_newest(
        self, limit: int, *, namespace: str | None = None, worker: str | None = None, before_id: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """Newest first."""
        sql, params = "SELECT id, item FROM traces WHERE 1 = 1", []
        sql, params = self._trace_where(sql, params, namespace, worker)
        if before_id is not None:
            sql += " AND id < ?"
            params.append(before_id)
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit]).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    @staticmethod
    def _trace_where(sql: str, params: list[Any], namespace: str | None, worker: str | None) -> tuple[str, list[Any]]:
        if namespace:
            sql += " AND namespace = ?"
            params.append(namespace)
        if worker:
            sql += " AND script_name = ?"
            params.append(worker)
        return sql, params

    def last_trace_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM traces").fetchone()[0]

    def trace_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM traces").fetchone()[0]

    def worker_stats(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Per worker: stored request count, error count and last outcome."""
        rows = self.db.execute(
            """
            SELECT script_name, COUNT(*),
                   SUM(outcome NOT IN ('ok', 'scriptNotFound', 'canceled')),
                   (SELECT outcome FROM traces t2 WHERE t2.namespace = t.namespace AND t2.script_name = t.script_name
                    ORDER BY id DESC LIMIT 1)
            FROM traces t WHERE namespace = ? AND script_name IS NOT NULL GROUP BY script_name
            """,
            [namespace],
        ).fetchall()
        return {row[0]: {"requests": row[1], "errors": row[2] or 0, "lastOutcome": row[3]} for row in rows}

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
