"""SQL of the shared app configuration: compare-and-set writes, history, reverts, and the changes agents follow.

Every config write runs in the single write path and, first of all, takes the config lock: on PostgreSQL a
transaction-level advisory lock (so two replicas on one database serialise their config writes), on SQLite
the writer's ``BEGIN IMMEDIATE`` already does. Under it, the stored version is read and compared with the
expected one, and the row is changed with ``UPDATE ... WHERE version = :read`` (a conflict can never write),
the history row and the new ``revision`` (one more than the highest) written in the same transaction. Because
revisions are given out under the lock and the lock is held until commit, they commit in order: a reader that
saw revision ``n`` has seen every change up to ``n``, so agents can follow them with one cursor.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from session_monitor.errors import ConfigConflict, ConfigNotFound
from session_monitor.store.models import agents, audit_log, config_entries, config_history
from session_monitor.store.repository import Actor, Store

CONFIG_LOCK_CLASS = 0x534D_4346
"""First key of the PostgreSQL advisory lock of config writes (``SMCF``); the second names the schema."""


def _scope(schema: str | None) -> int:
    if not schema:
        return 0
    value = zlib.crc32(schema.encode())
    return value - 2**32 if value >= 2**31 else value


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class Write:
    """What a write stored, and the agents to wake (they follow the key's app)."""

    entry: dict[str, Any]
    agent_ids: list[str]


def _entry(row: Any) -> dict[str, Any]:
    return {
        "app": row.app,
        "key": row.key,
        "value": _loads(row.value),
        "version": int(row.version),
        "revision": int(row.revision),
        "updated_at": row.updated_at,
        "updated_by": row.updated_by,
    }


def _followers(conn: sa.Connection, app: str) -> list[str]:
    """Live agents following ``app`` (the list is small: a few names per agent; filtered here, not in SQL)."""
    rows = conn.execute(
        sa.select(agents.c.agent_id, agents.c.config_apps).where(
            agents.c.exited_at.is_(None), agents.c.config_apps.is_not(None)
        )
    ).all()
    return [agent_id for agent_id, apps in rows if isinstance(apps, list) and app in apps]


def newest_revision(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(config_entries.c.revision), 0))).scalar_one())


class ConfigStore:
    """Shared configuration over the same database and clock as the session :class:`Store`."""

    def __init__(self, store: Store, *, schema: str | None = None) -> None:
        self.store = store
        self.db = store.db
        self._lock_args = {"a": CONFIG_LOCK_CLASS, "b": _scope(schema)}

    def _lock(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, :b)"), self._lock_args)

    # -- reads -------------------------------------------------------------------------------------

    async def list_app(self, app: str) -> list[dict[str, Any]]:
        c = config_entries.c

        def fn(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(sa.select(config_entries).where(c.app == app, sa.not_(c.deleted)).order_by(c.key)).all()
            return [_entry(r) for r in rows]

        return await self.db.read(fn)

    async def list_apps(self) -> list[dict[str, Any]]:
        """Every app with config: its name, number of live keys and last change."""
        c = config_entries.c

        def fn(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                sa.select(c.app, sa.func.count(), sa.func.max(c.updated_at))
                .where(sa.not_(c.deleted))
                .group_by(c.app)
                .order_by(c.app)
            ).all()
            return [{"app": app, "keys": int(n), "updated_at": at} for app, n, at in rows]

        return await self.db.read(fn)

    async def get(self, app: str, key: str) -> dict[str, Any]:
        """The key's entry; :class:`ConfigNotFound` (with the tombstone's version) when absent or deleted."""
        c = config_entries.c

        def fn(conn: sa.Connection) -> dict[str, Any]:
            row = conn.execute(sa.select(config_entries).where(c.app == app, c.key == key)).first()
            if row is None or row.deleted:
                raise ConfigNotFound(app, key, current_version=0 if row is None else int(row.version))
            return _entry(row)

        return await self.db.read(fn)

    async def history(self, app: str, key: str, *, limit: int, offset: int) -> dict[str, Any]:
        h, c = config_history.c, config_entries.c

        def fn(conn: sa.Connection) -> dict[str, Any]:
            current = conn.execute(sa.select(c.version).where(c.app == app, c.key == key)).scalar()
            if current is None:
                raise ConfigNotFound(app, key)
            where = sa.and_(h.app == app, h.key == key)
            total = conn.execute(sa.select(sa.func.count()).select_from(config_history).where(where)).scalar_one()
            rows = conn.execute(
                sa.select(config_history).where(where).order_by(h.version.desc()).limit(limit).offset(offset)
            ).all()
            versions = [
                {
                    "version": int(r.version),
                    "value": _loads(r.value),
                    "deleted": bool(r.deleted),
                    "action": r.action,
                    "reverted_to": r.reverted_to,
                    "actor": r.actor,
                    "at": r.at,
                }
                for r in rows
            ]
            return {"app": app, "key": key, "current_version": int(current), "versions": versions, "total": total}

        return await self.db.read(fn)

    async def changes(self, agent_id: str, epoch: int, after: int) -> dict[str, Any] | None:
        """Changes of the apps ``agent_id`` follows since revision ``after`` (its long-poll); ``None`` when the
        follow epoch the agent asks with is not the one its last sync registered (nothing to say yet)."""

        def fn(conn: sa.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                sa.select(agents.c.config_apps, agents.c.config_epoch).where(agents.c.agent_id == agent_id)
            ).first()
            if row is None or row.config_epoch != epoch or not row.config_apps:
                return None
            return read_changes(conn, list(row.config_apps), after, epoch)

        return await self.db.read(fn)

    # -- writes ------------------------------------------------------------------------------------

    async def put(self, app: str, key: str, value: str, *, expected: int | None, actor: Actor, audit: bool) -> Write:
        """Store ``value`` (JSON text) as the key's next version if its version is ``expected`` (None: any)."""
        now = self.store.clock()

        def op(conn: sa.Connection) -> Write:
            self._lock(conn)
            current = self._check(conn, app, key, expected)
            write = self._apply(conn, app, key, value, current, now, actor, action="set")
            if audit:
                _audit(conn, now, actor, "config_set", app, key, version=write.entry["version"])
            return write

        return await self.db.write(op)

    async def delete(self, app: str, key: str, *, expected: int | None, actor: Actor, audit: bool) -> Write:
        now = self.store.clock()

        def op(conn: sa.Connection) -> Write:
            self._lock(conn)
            current = self._check(conn, app, key, expected)
            if current is None or current.deleted:
                raise ConfigNotFound(app, key, current_version=0 if current is None else int(current.version))
            write = self._apply(conn, app, key, None, current, now, actor, action="delete")
            if audit:
                _audit(conn, now, actor, "config_delete", app, key, version=write.entry["version"])
            return write

        return await self.db.write(op)

    async def revert(
        self, app: str, key: str, version: int, *, expected: int | None, actor: Actor, audit: bool
    ) -> Write:
        """Write the value of ``version`` (from the history) as a new version; 404 if the history lacks it."""
        now = self.store.clock()
        h = config_history.c

        def op(conn: sa.Connection) -> Write:
            self._lock(conn)
            old = conn.execute(
                sa.select(h.value, h.deleted).where(h.app == app, h.key == key, h.version == version)
            ).first()
            if old is None:
                raise ConfigNotFound(app, key, version)
            current = self._check(conn, app, key, expected)
            value = None if old.deleted else old.value
            write = self._apply(conn, app, key, value, current, now, actor, action="revert", reverted_to=version)
            if audit:
                _audit(conn, now, actor, "config_revert", app, key, version=write.entry["version"], to=version)
            return write

        return await self.db.write(op)

    @staticmethod
    def _check(conn: sa.Connection, app: str, key: str, expected: int | None) -> Any:
        c = config_entries.c
        current = conn.execute(sa.select(c.version, c.value, c.deleted).where(c.app == app, c.key == key)).first()
        version = 0 if current is None else int(current.version)
        if expected is not None and expected != version:
            value = None if current is None or current.deleted else _loads(current.value)
            raise ConfigConflict(app, key, expected, version, value)
        return current

    def _apply(
        self,
        conn: sa.Connection,
        app: str,
        key: str,
        value: str | None,
        current: Any,
        now: datetime,
        actor: Actor,
        *,
        action: str,
        reverted_to: int | None = None,
    ) -> Write:
        c = config_entries.c
        revision = newest_revision(conn) + 1
        deleted = value is None
        values = {"value": value, "revision": revision, "deleted": deleted, "updated_at": now,
                  "updated_by": actor.name}  # fmt: skip
        if current is None:
            version = 1
            conn.execute(config_entries.insert().values(app=app, key=key, version=version, **values))
        else:
            version = int(current.version) + 1
            done = conn.execute(
                config_entries.update()
                .where(c.app == app, c.key == key, c.version == current.version)
                .values(version=version, **values)
            ).rowcount
            if done != 1:  # cannot happen under the lock; never write over a version we did not read
                raise ConfigConflict(app, key, int(current.version), -1, None)
        conn.execute(
            config_history.insert().values(
                app=app,
                key=key,
                version=version,
                value=value,
                deleted=deleted,
                action=action,
                reverted_to=reverted_to,
                actor=actor.name,
                at=now,
            )  # fmt: skip
        )
        entry = {"app": app, "key": key, "value": _loads(value), "version": version, "revision": revision,
                 "updated_at": now, "updated_by": actor.name, "deleted": deleted}  # fmt: skip
        return Write(entry, _followers(conn, app))

    async def purge(self, *, before: datetime, keep_versions: int) -> int:
        """Drop history versions older than ``before`` or beyond the newest ``keep_versions`` of their key;
        the current version of a key is always kept."""
        h, c = config_history.c, config_entries.c

        def op(conn: sa.Connection) -> int:
            current = sa.select(c.version).where(c.app == h.app, c.key == h.key).scalar_subquery()
            n = conn.execute(
                config_history.delete().where(
                    h.version < current, sa.or_(h.at < before, h.version <= current - keep_versions)
                )
            ).rowcount
            return int(n)

        return await self.db.write(op)


def _audit(conn: sa.Connection, now: datetime, actor: Actor, action: str, app: str, key: str, **detail: Any) -> None:
    conn.execute(
        audit_log.insert().values(
            at=now,
            actor=actor.name,
            action=action,
            target=f"{app}/{key}"[:300],
            detail={"app": app, "key": key, **detail},
            remote_addr=actor.remote_addr,
        )  # fmt: skip
    )


def read_changes(conn: sa.Connection, apps: list[str], after: int, epoch: int) -> dict[str, Any]:
    """Keys of ``apps`` changed after revision ``after`` (every live key when ``after`` is 0, or beyond the newest:
    a recreated database), with the cursor to pass next."""
    c = config_entries.c
    newest = newest_revision(conn)
    full = after <= 0 or after > newest
    query = sa.select(config_entries).where(c.app.in_(apps))
    query = query.where(sa.not_(c.deleted)) if full else query.where(c.revision > after)
    rows = conn.execute(query.order_by(c.revision)).all()
    changes = [
        {
            "app": r.app,
            "key": r.key,
            "value": _loads(r.value),
            "version": int(r.version),
            "deleted": bool(r.deleted),
            "revision": int(r.revision),
        }
        for r in rows
    ]
    return {"config": changes, "config_cursor": newest, "config_full": full, "config_epoch": epoch}


def follow(conn: sa.Connection, agent_id: str, apps: list[str], epoch: int, after: int) -> dict[str, Any]:
    """In an agent's sync: remember the apps it follows (and the epoch), and answer their changes since ``after``."""
    conn.execute(
        agents.update().where(agents.c.agent_id == agent_id).values(config_apps=sorted(set(apps)), config_epoch=epoch)
    )
    return read_changes(conn, apps, after, epoch)
