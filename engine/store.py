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
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from .egress import EgressPolicy
from .javascript import DEFAULT_DISPATCH_BINDING, ScriptInfo, language
from .errors import InvalidInput, NotFound, WasmdeckError
from .limits import FIELDS, Limits
from .outbound import OutboundParameter, OutboundSetting
from .secrets import MAX_SECRETS_PER_WORKER, SealedSecret
from .traces import MAX_ITEM_BYTES, fit_item

SCHEMA_VERSION = 7
DEFAULT_NAMESPACE = "default"
# Trace retention: the newest N items are kept, and of those only as many of the newest as fit
# in the byte budget (each item counted as stored: compact JSON, at most traces.MAX_ITEM_BYTES).
DEFAULT_TRACE_RETENTION = 10_000
TRACE_RETENTION_RANGE = (1, 10_000_000)
DEFAULT_TRACE_RETENTION_BYTES = 256 * 2**20
TRACE_RETENTION_BYTES_RANGE = (2**20, 64 * 2**30)
MAX_VERSION = 2**31 - 1  # versions are counted from 1; no worker gets anywhere near this
BUSY_TIMEOUT_MS = 30_000
PRIVATE_FILE_MODE = 0o600  # the database holds vars and traces: only its owner may read it
ROUTING_MODES = ("host", "path")
TAIL_SCOPES = ("worker", "namespace", "dispatcher")


def now_ms() -> int:
    return int(time.time() * 1000)


class DatabaseUnavailable(WasmdeckError):
    """The database cannot be used as asked: read-only, unopenable, full, or locked too long."""


class CorruptModule(WasmdeckError):
    """A stored module's bytes no longer match the sha256 they were stored under."""


def database_error(path: Path, error: sqlite3.Error) -> WasmdeckError:
    """One sentence for an SQLite failure that is about the file, not about wasmdeck's data."""
    text = str(error)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return DatabaseUnavailable(
            f"the database {path} is read-only; wasmdeck needs to write to it (and to its -wal and -shm files "
            "beside it)"
        )
    if "unable to open" in lowered or "disk i/o error" in lowered:
        return DatabaseUnavailable(f"cannot open the database {path} ({text}): check that it and its folder can be read and written")
    if "locked" in lowered or "busy" in lowered:
        return DatabaseUnavailable(
            f"the database {path} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s; try again when it is done"
        )
    if "full" in lowered:
        return DatabaseUnavailable(f"the database {path} cannot grow: the disk is full ({text})")
    return DatabaseUnavailable(f"the database {path} failed: {text}")


def whole_number_in(value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} must be a whole number from {low:,} to {high:,}, not {value!r}")
    return value


def _private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (SQLite takes an empty file as a new
    database); an existing one that group or others may read loses those bits, if it is ours."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        return
    except FileExistsError:
        pass
    except OSError:
        return  # SQLite's own open will say what is wrong
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = companion.stat()
            if info.st_mode & 0o077 and info.st_uid == os.geteuid() and stat.S_ISREG(info.st_mode):
                os.chmod(companion, stat.S_IMODE(info.st_mode) & ~0o077)
        except OSError:
            continue


@dataclass(frozen=True)
class Namespace:
    name: str
    routing: str
    defaults: Limits
    created_at: int
    dispatch_worker: str | None = None
    outbound: OutboundSetting | None = None
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # the name of the dispatch namespace binding a JavaScript dispatch Worker finds in env
    dispatch_binding: str = DEFAULT_DISPATCH_BINDING

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "routing": self.routing,
            "defaults": self.defaults.as_dict(),
            "createdAt": self.created_at,
            "dispatchWorker": self.dispatch_worker,
            "dispatchBinding": self.dispatch_binding,
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
            dispatch_binding=data.get("dispatchBinding") or DEFAULT_DISPATCH_BINDING,
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
    script: ScriptInfo | None = None  # a JavaScript Worker's script, as the runtime reported it at deploy

    @property
    def language(self) -> str:
        """`javascript` or `wasm`."""
        return language(self.abi)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "abi": self.abi,
            "language": self.language,
            "tags": list(self.tags),
            "vars": dict(self.vars),
            "createdAt": self.created_at,
            "message": self.message,
            "current": self.current,
        }
        if self.script is not None:
            data["script"] = self.script.as_dict()
        return data


@dataclass(frozen=True)
class Worker(WorkerVersion):
    first_deployed_at: int = 0


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("namespaces").create(
        {"name": str, "routing": str, "cpu_ms": int, "memory_mb": int, "sub_requests": int, "wall_ms": int, "created_at": int},
        pk="name",
    )
    db.table("modules").create({"sha256": str, "size": int, "bytes": bytes, "created_at": int}, pk="sha256")
    db.table("workers").create(
        {"id": int, "namespace": str, "name": str, "current_version": int, "created_at": int, "updated_at": int},
        pk="id",
        foreign_keys=[("namespace", "namespaces", "name")],
    )
    db.table("workers").create_index(["namespace", "name"], unique=True)
    db.table("versions").create(
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
    db.table("versions").create_index(["worker_id", "version"], unique=True)
    db.table("tag_limits").create(
        {"tag": str, "cpu_ms": int, "memory_mb": int, "sub_requests": int, "wall_ms": int, "updated_at": int}, pk="tag"
    )
    db.table("traces").create(
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
    db.table("traces").create_index(["namespace", "script_name"])
    db.table("settings").create({"key": str, "value": str}, pk="key")
    db.table("namespaces").insert(
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
    db.table("tail_consumers").create(
        {"id": int, "namespace": str, "consumer": str, "scope": str, "worker": str, "created_at": int},
        pk="id",
        foreign_keys=[("namespace", "namespaces", "name")],
    )
    db.execute("CREATE UNIQUE INDEX tail_consumers_unique ON tail_consumers (namespace, consumer, scope, COALESCE(worker, ''))")
    _config_triggers(db, "tail_consumers")


def _migration_4(db: sqlite_utils.Database) -> None:
    """Secrets, sealed by engine.secrets (their values never reach this file in clear), and each
    worker's compatibility date and flags; both go when their worker goes."""
    db.execute(
        "CREATE TABLE secrets (worker_id INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE, "
        "name TEXT NOT NULL, key_id TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, "
        "updated_at INTEGER NOT NULL, PRIMARY KEY (worker_id, name))"
    )
    db.execute(
        "CREATE TABLE compatibility (worker_id INTEGER PRIMARY KEY REFERENCES workers(id) ON DELETE CASCADE, "
        "date TEXT, flags TEXT NOT NULL)"
    )
    _config_triggers(db, "secrets")


def _migration_5(db: sqlite_utils.Database) -> None:
    """Trace sizes, so retention can count bytes: each row's size and a running total kept by triggers."""
    db.execute("ALTER TABLE traces ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE traces SET size = length(CAST(item AS BLOB))")
    db.execute("CREATE TABLE trace_totals (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL)")
    db.execute("INSERT INTO trace_totals (id, bytes) SELECT 1, COALESCE(SUM(size), 0) FROM traces")
    db.execute(
        "CREATE TRIGGER traces_insert_size AFTER INSERT ON traces "
        "BEGIN UPDATE trace_totals SET bytes = bytes + NEW.size WHERE id = 1; END"
    )
    db.execute(
        "CREATE TRIGGER traces_delete_size AFTER DELETE ON traces "
        "BEGIN UPDATE trace_totals SET bytes = bytes - OLD.size WHERE id = 1; END"
    )


METERED_TABLE = "metered_modules"


def _migration_6(db: sqlite_utils.Database) -> None:
    """The metered form of each module (see engine.metering), kept beside it by sha256 so a
    restarted engine does not meter again; `scheme` names the metering version that made it."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {METERED_TABLE} "
        "(sha256 TEXT PRIMARY KEY, scheme TEXT NOT NULL, bytes BLOB NOT NULL, digest TEXT NOT NULL)"
    )


SCRIPTS_TABLE = "scripts"


def _migration_7(db: sqlite_utils.Database) -> None:
    """JavaScript Workers: what the runtime reported for each script when it was checked at deploy
    (by the script's sha256, like modules), and the name of each namespace's dispatch binding."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {SCRIPTS_TABLE} "
        "(sha256 TEXT PRIMARY KEY, filename TEXT NOT NULL, format TEXT NOT NULL, handlers TEXT NOT NULL)"
    )
    db.execute("ALTER TABLE namespaces ADD COLUMN dispatch_binding TEXT")


MIGRATIONS = {1: _migration_1, 2: _migration_2, 3: _migration_3, 4: _migration_4, 5: _migration_5, 6: _migration_6,
              7: _migration_7}


_encode_item = json.JSONEncoder(separators=(",", ":")).encode


class Store:
    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self.now_ms = clock
        if self.path.exists() and self.path.is_dir():
            raise InvalidInput(f"database path {self.path} is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise DatabaseUnavailable(f"cannot create the folder {self.path.parent} for the database: {error.strerror}") from None
        _private_file(self.path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self._migrate()
        except WasmdeckError:
            self.close()
            raise
        except sqlite3.OperationalError as error:
            self.close()
            raise database_error(self.path, error) from None
        except sqlite3.DatabaseError as error:
            self.close()
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
        try:
            database.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise database_error(self.path, error) from None
        try:
            yield database
        except BaseException as error:
            if database.conn.in_transaction:
                database.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):
                raise database_error(self.path, error) from None
            raise
        else:
            try:
                database.execute("COMMIT")
            except sqlite3.OperationalError as error:
                if database.conn.in_transaction:
                    database.execute("ROLLBACK")
                raise database_error(self.path, error) from None

    def _migrate(self) -> None:
        database = self.db
        if database.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            database.execute("PRAGMA journal_mode = WAL")
        with self.write() as db:
            current = 0
            if db.table("meta").exists():
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
                db.table("meta").upsert({"key": "schema_version", "value": str(version)}, pk="key")

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
            db.table("settings").upsert({"key": key, "value": value}, pk="key")

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
            dispatch_binding=row.get("dispatch_binding") or DEFAULT_DISPATCH_BINDING,
        )

    def _require_namespace(self, db: sqlite_utils.Database, name: str) -> None:
        if not db.execute("SELECT 1 FROM namespaces WHERE name = ?", [name]).fetchone():
            raise NotFound(f"namespace {name!r} does not exist")

    def _require_worker(self, db: sqlite_utils.Database, namespace: str, name: str, role: str) -> None:
        if not db.execute("SELECT 1 FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone():
            raise NotFound(f"{role} {name!r} is not a worker in namespace {namespace!r}; deploy it first")

    def set_dispatch_worker(self, namespace: str, worker: str | None, binding: str | None = None) -> Namespace:
        """`binding`: the dispatch namespace binding's name (None leaves it as it is)."""
        with self.write() as db:
            self._require_namespace(db, namespace)
            if worker is not None:
                self._require_worker(db, namespace, worker, "dispatch Worker")
            changes: dict[str, Any] = {"dispatch_worker": worker}
            if binding is not None:
                changes["dispatch_binding"] = binding
            db.table("namespaces").update(namespace, changes)
        return self.namespace(namespace)

    def set_outbound(self, namespace: str, outbound: OutboundSetting | None) -> Namespace:
        with self.write() as db:
            self._require_namespace(db, namespace)
            if outbound is None:
                db.table("namespaces").update(namespace, {"outbound_service": None, "outbound_parameters": None})
            else:
                self._require_worker(db, namespace, outbound.service, "Outbound Worker")
                parameters = json.dumps([[p.name, p.template] for p in outbound.parameters])
                db.table("namespaces").update(namespace, {"outbound_service": outbound.service, "outbound_parameters": parameters})
        return self.namespace(namespace)

    def set_egress(self, namespace: str, egress: EgressPolicy) -> Namespace:
        data = egress.as_dict()
        with self.write() as db:
            self._require_namespace(db, namespace)
            db.table("namespaces").update(namespace, {"egress_allow": json.dumps(data["allow"]), "egress_block": json.dumps(data["block"])})
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
                db.table("tail_consumers").insert({**consumer.as_dict(), "created_at": self.now_ms()})
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
        return [self._namespace_from_row(row) for row in self.db.table("namespaces").rows_where(order_by="name")]

    def namespace(self, name: str) -> Namespace:
        rows = list(self.db.table("namespaces").rows_where("name = ?", [name]))
        if not rows:
            raise NotFound(f"namespace {name!r} does not exist")
        return self._namespace_from_row(rows[0])

    def create_namespace(self, name: str, routing: str = "host", defaults: Limits | None = None) -> Namespace:
        if routing not in ROUTING_MODES:
            raise InvalidInput(f"routing {routing!r} is not one of host, path")
        with self.write() as db:
            if db.execute("SELECT 1 FROM namespaces WHERE name = ?", [name]).fetchone():
                raise InvalidInput(f"namespace {name!r} already exists")
            db.table("namespaces").insert(
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
                db.table("namespaces").update(name, changes)
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
               v.message, (v.version = w.current_version) AS current, w.created_at AS first_deployed_at,
               s.filename, s.format, s.handlers
        FROM workers w JOIN versions v ON v.worker_id = w.id JOIN modules m ON m.sha256 = v.sha256
        LEFT JOIN scripts s ON s.sha256 = v.sha256
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
            script=ScriptInfo(row[12], row[13], tuple(json.loads(row[14]))) if row[12] is not None else None,
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
        secrets: Sequence[SealedSecret] = (),
        keep_secrets: bool | frozenset[str] = True,
        script: ScriptInfo | None = None,
    ) -> Worker:
        """Store the module (once per sha256) and make a new version current, atomically; `secrets`
        are set in the same transaction, and the worker's other secrets stay (`keep_secrets` True),
        go (False), or stay only when named in `keep_secrets`. `script`: what the JavaScript runtime
        reported for a script (kept by sha256, the latest deploy's file name winning)."""
        with self.write() as db:
            if not db.execute("SELECT 1 FROM namespaces WHERE name = ?", [namespace]).fetchone():
                raise NotFound(f"namespace {namespace!r} does not exist")
            if not db.execute("SELECT 1 FROM modules WHERE sha256 = ?", [sha256]).fetchone():
                db.table("modules").insert({"sha256": sha256, "size": len(module), "bytes": module, "created_at": self.now_ms()})
            if script is not None:
                db.execute(
                    f"INSERT OR REPLACE INTO {SCRIPTS_TABLE} (sha256, filename, format, handlers) VALUES (?, ?, ?, ?)",
                    [sha256, script.filename, script.format, json.dumps(list(script.handlers))],
                )
            if keep_secrets is not True:
                kept = sorted(keep_secrets or ())
                db.execute(
                    "DELETE FROM secrets WHERE worker_id = (SELECT id FROM workers WHERE namespace = ? AND name = ?) "
                    f"AND name NOT IN ({', '.join('?' * len(kept))})",
                    [namespace, name, *kept],
                )
            self._new_version(db, namespace, name, sha256, abi, tags, variables, message)
            self._write_secrets(db, namespace, name, secrets, variables)
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
            worker_id = db.table("workers").insert(
                {"namespace": namespace, "name": name, "current_version": 0, "created_at": stamp, "updated_at": stamp}
            ).last_pk
        version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE worker_id = ?", [worker_id]).fetchone()[0]
        db.table("versions").insert(
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
        self._check_distinct_names(db, worker_id, variables)
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

    def serves_abi(self, abi: str) -> bool:
        """Whether any worker's current version, in any namespace, has this ABI."""
        return self.db.execute(
            "SELECT 1 FROM workers w JOIN versions v ON v.worker_id = w.id AND v.version = w.current_version "
            "WHERE v.abi = ? LIMIT 1", [abi],
        ).fetchone() is not None

    def versions(self, namespace: str, name: str) -> list[WorkerVersion]:
        rows = self.db.execute(
            self._VERSION_SELECT + " WHERE w.namespace = ? AND w.name = ? ORDER BY v.version", [namespace, name]
        ).fetchall()
        if not rows:
            raise NotFound(f"worker {name!r} does not exist in namespace {namespace!r}")
        return [self._version_from_row(row) for row in rows]

    def rollback(self, namespace: str, name: str, version: int) -> Worker:
        """Serve an earlier version again; recorded as a new version so history only grows."""
        whole_number_in(version, 1, MAX_VERSION, "a version")
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
        """Delete a worker, and the modules (with their metered forms and script records) no version uses any more."""
        with self.write() as db:
            row = db.execute("SELECT id FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone()
            if row is None:
                raise NotFound(f"worker {name!r} does not exist in namespace {namespace!r}")
            db.execute("DELETE FROM versions WHERE worker_id = ?", [row[0]])
            db.execute("DELETE FROM workers WHERE id = ?", [row[0]])
            db.execute("DELETE FROM modules WHERE sha256 NOT IN (SELECT DISTINCT sha256 FROM versions)")
            db.execute(f"DELETE FROM {SCRIPTS_TABLE} WHERE sha256 NOT IN (SELECT sha256 FROM modules)")
            db.execute(f"DELETE FROM {METERED_TABLE} WHERE sha256 NOT IN (SELECT sha256 FROM modules)")

    # The metered form of each module (migration 6): a cache of what can be made again from `modules`.
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

    # -- secrets (sealed by engine.secrets) and compatibility settings -----------------------

    @staticmethod
    def _check_distinct_names(db: sqlite_utils.Database, worker_id: int, variables: dict[str, str]) -> None:
        for (name,) in db.execute("SELECT name FROM secrets WHERE worker_id = ? ORDER BY name", [worker_id]).fetchall():
            if name in variables:
                raise InvalidInput(f"{name} is both a var and a secret of this worker; a var and a secret need distinct names")

    def _write_secrets(
        self, db: sqlite_utils.Database, namespace: str, name: str, sealed: Sequence[SealedSecret], variables: dict[str, str]
    ) -> None:
        worker_id = db.execute("SELECT id FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone()[0]
        stamp = self.now_ms()
        for secret in sealed:
            db.execute(
                "INSERT INTO secrets (worker_id, name, key_id, nonce, ciphertext, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (worker_id, name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce, "
                "ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                [worker_id, secret.name, secret.key_id, secret.nonce, secret.ciphertext, stamp],
            )
        self._check_distinct_names(db, worker_id, variables)
        count = db.execute("SELECT COUNT(*) FROM secrets WHERE worker_id = ?", [worker_id]).fetchone()[0]
        if count > MAX_SECRETS_PER_WORKER:
            raise InvalidInput(f"a worker can have at most {MAX_SECRETS_PER_WORKER} secrets; worker {name!r} would have {count}")

    def change_secrets(
        self, namespace: str, name: str, sealed: Sequence[SealedSecret], deleted: tuple[str, ...], message: str,
        variables: dict[str, str] | None = None,
    ) -> Worker:
        """Set and delete secrets (and, given `variables`, replace the vars) as one new version
        running the same module and tags."""
        with self.write() as db:
            current = self._current_row(db, namespace, name)
            worker_id = db.execute("SELECT id FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone()[0]
            for secret_name in deleted:  # first, so a var may take a deleted secret's name
                if not db.execute("DELETE FROM secrets WHERE worker_id = ? AND name = ?", [worker_id, secret_name]).rowcount:
                    raise NotFound(f"worker {name!r} has no secret named {secret_name}")
            new_vars = current.vars if variables is None else variables
            self._new_version(db, namespace, name, current.sha256, current.abi, current.tags, new_vars, message)
            self._write_secrets(db, namespace, name, sealed, new_vars)
        return self.worker(namespace, name)

    def sealed_secrets(self, namespace: str, name: str) -> list[SealedSecret]:
        rows = self.db.execute(
            "SELECT s.name, s.key_id, s.nonce, s.ciphertext FROM secrets s JOIN workers w ON w.id = s.worker_id "
            "WHERE w.namespace = ? AND w.name = ? ORDER BY s.name",
            [namespace, name],
        ).fetchall()
        return [SealedSecret(row[0], row[1], bytes(row[2]), bytes(row[3])) for row in rows]

    def secret_names(self, namespace: str, name: str) -> list[str]:
        """Names only (raises NotFound for an unknown worker)."""
        self._current_row(self.db, namespace, name)
        return [secret.name for secret in self.sealed_secrets(namespace, name)]

    def secret_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM secrets").fetchone()[0]

    def compatibility(self, namespace: str, name: str) -> tuple[str | None, tuple[str, ...]]:
        row = self.db.execute(
            "SELECT c.date, c.flags FROM compatibility c JOIN workers w ON w.id = c.worker_id WHERE w.namespace = ? AND w.name = ?",
            [namespace, name],
        ).fetchone()
        return (row[0], tuple(json.loads(row[1]))) if row else (None, ())

    def set_compatibility(self, namespace: str, name: str, date: str | None, flags: tuple[str, ...]) -> None:
        with self.write() as db:
            row = db.execute("SELECT id FROM workers WHERE namespace = ? AND name = ?", [namespace, name]).fetchone()
            if row is None:
                raise NotFound(f"worker {name!r} does not exist in namespace {namespace!r}")
            worker_id = row[0]
            db.execute(
                "INSERT INTO compatibility (worker_id, date, flags) VALUES (?, ?, ?) "
                "ON CONFLICT (worker_id) DO UPDATE SET date = excluded.date, flags = excluded.flags",
                [worker_id, date, json.dumps(list(flags))],
            )

    def module_bytes(self, sha256: str) -> bytes:
        """A stored module, checked against its sha256 (CorruptModule if the bytes changed)."""
        row = self.db.execute("SELECT bytes FROM modules WHERE sha256 = ?", [sha256]).fetchone()
        if row is None:
            raise NotFound(f"module {sha256} is not stored")
        data = bytes(row[0])
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CorruptModule(
                f"the stored module {sha256[:12]} is corrupt (its bytes no longer match their sha256); "
                "deploy the worker again to store it anew"
            )
        return data

    # -- limits -----------------------------------------------------------------------

    def tag_limits(self) -> dict[str, Limits]:
        return {
            row["tag"]: Limits(**{name: row[name] for name in FIELDS})
            for row in self.db.table("tag_limits").rows_where(order_by="tag")
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
            db.table("tag_limits").upsert({"tag": tag, **merged, "updated_at": self.now_ms()}, pk="tag")
        return Limits(**merged)

    def delete_tag_limits(self, tag: str) -> None:
        with self.write() as db:
            if not db.execute("SELECT 1 FROM tag_limits WHERE tag = ?", [tag]).fetchone():
                raise NotFound(f"no limits are set for tag {tag!r}")
            db.execute("DELETE FROM tag_limits WHERE tag = ?", [tag])

    # -- traces -----------------------------------------------------------------------

    def _setting_in(self, key: str, default: int, bounds: tuple[int, int]) -> int:
        """A numeric setting; one out of range or malformed (written by hand, or by an old version
        that did not check) counts as unset rather than breaking every trace write."""
        raw = self.get_setting(key)
        try:
            value = int(raw) if raw is not None else default
        except ValueError:
            return default
        return value if bounds[0] <= value <= bounds[1] else default

    def trace_retention(self) -> int:
        """How many of the newest trace items are kept."""
        return self._setting_in("trace_retention", DEFAULT_TRACE_RETENTION, TRACE_RETENTION_RANGE)

    def trace_retention_bytes(self) -> int:
        """How many bytes of the newest trace items (as stored) are kept."""
        return self._setting_in("trace_retention_bytes", DEFAULT_TRACE_RETENTION_BYTES, TRACE_RETENTION_BYTES_RANGE)

    def set_trace_retention(self, items: int | None = None, max_bytes: int | None = None) -> None:
        """Keep the newest `items` trace items and at most `max_bytes` bytes of them (None: unchanged);
        applied from the next trace write."""
        changes: dict[str, str] = {}
        if items is not None:
            changes["trace_retention"] = str(whole_number_in(items, *TRACE_RETENTION_RANGE, "trace retention (items)"))
        if max_bytes is not None:
            changes["trace_retention_bytes"] = str(
                whole_number_in(max_bytes, *TRACE_RETENTION_BYTES_RANGE, "trace retention (bytes)")
            )
        with self.write() as db:
            for key, value in changes.items():
                db.table("settings").upsert({"key": key, "value": value}, pk="key")

    def trace_bytes(self) -> int:
        """The size of the stored trace items (as stored)."""
        return self.db.execute("SELECT bytes FROM trace_totals WHERE id = 1").fetchone()[0]

    def insert_traces(self, origin: str, items: list[dict[str, Any]], retention: int | None = None) -> None:
        if not items:
            return
        keep = self.trace_retention() if retention is None else min(max(retention, 1), TRACE_RETENTION_RANGE[1])
        keep_bytes = self.trace_retention_bytes()
        rows = []
        for item in items:
            text = _encode_item(item)
            if len(text) > MAX_ITEM_BYTES:  # items are bounded when made; this holds for any other source
                text = _encode_item(fit_item(json.loads(text)))
            rows.append((origin, item.get("dispatchNamespace"), item.get("scriptName"), item.get("outcome"),
                         item.get("eventTimestamp"), text, len(text)))
        with self.write() as db:
            db.conn.executemany(
                "INSERT INTO traces (origin, namespace, script_name, outcome, event_timestamp, item, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("DELETE FROM traces WHERE id <= (SELECT MAX(id) FROM traces) - ?", [keep])
            excess = db.execute("SELECT bytes FROM trace_totals WHERE id = 1").fetchone()[0] - keep_bytes
            if excess > 0:
                self._drop_oldest_traces(db, excess)

    @staticmethod
    def _drop_oldest_traces(db: sqlite_utils.Database, excess: int) -> None:
        """Delete the oldest items until at least `excess` bytes are gone."""
        freed, cutoff = 0, None
        for row_id, size in db.execute("SELECT id, size FROM traces ORDER BY id"):
            freed += size
            cutoff = row_id
            if freed >= excess:
                break
        if cutoff is not None:
            db.execute("DELETE FROM traces WHERE id <= ?", [cutoff])

    def traces_after(
        self,
        after_id: int = 0,
        *,
        namespace: str | None = None,
        worker: str | None = None,
        exclude_origin: str | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, dict[str, Any]]]:
        params: list[Any] = [after_id]
        sql, params = self._trace_where("SELECT id, item FROM traces WHERE id > ?", params, namespace, worker)
        if exclude_origin:
            sql += " AND origin != ?"
            params.append(exclude_origin)
        rows = self.db.execute(sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def traces_newest(
        self, limit: int, *, namespace: str | None = None, worker: str | None = None, before_id: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """Newest first."""
        sql, params = self._trace_where("SELECT id, item FROM traces WHERE 1 = 1", [], namespace, worker)
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
        """Per worker: stored invocation count, error count and last outcome. An item a warm instance
        left when it failed between invocations (`event.instance`) is no invocation: not counted."""
        rows = self.db.execute(
            """
            SELECT script_name, COUNT(*),
                   SUM(outcome NOT IN ('ok', 'scriptNotFound', 'canceled')),
                   (SELECT outcome FROM traces t2 WHERE t2.namespace = t.namespace AND t2.script_name = t.script_name
                    AND json_extract(t2.item, '$.event.instance') IS NULL ORDER BY id DESC LIMIT 1)
            FROM traces t WHERE namespace = ? AND script_name IS NOT NULL
            AND json_extract(item, '$.event.instance') IS NULL GROUP BY script_name
            """,
            [namespace],
        ).fetchall()
        return {row[0]: {"requests": row[1], "errors": row[2] or 0, "lastOutcome": row[3]} for row in rows}

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
