"""Versioned schema, upgraded in place at start-up.

Each migration is frozen: it spells out the DDL of its own step instead of
reading ``models``, so an old database replays exactly the steps it lacks.
Versions applied are recorded in ``schema_migrations``; the whole upgrade runs
in one transaction (both SQLite and PostgreSQL have transactional DDL), so a
failed upgrade leaves the database as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from session_monitor.store.models import UTCDateTime

_meta = sa.MetaData()
schema_migrations = sa.Table(
    "schema_migrations",
    _meta,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _v1_sessions(conn: sa.Connection) -> None:
    """The prototype's table: one row per live session."""
    meta = sa.MetaData()
    sa.Table(
        "sessions",
        meta,
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("app_name", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(200)),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, server_default="idle"),
        sa.Column("current_task", sa.String(500)),
        sa.Column("kill_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Index("ix_sessions_app_name", "app_name"),
    ).create(conn)


def _v2_history(conn: sa.Connection) -> None:
    """Placement, task timing, kill intent and end reason: ended sessions stay as history."""
    columns: list[tuple[str, sa.types.TypeEngine[Any]]] = [
        ("host", sa.String(255)),
        ("pid", sa.Integer()),
        ("task_started_at", UTCDateTime()),
        ("kill_requested_at", UTCDateTime()),
        ("kill_requested_by", sa.String(100)),
        ("kill_reason", sa.String(500)),
        ("ended_at", UTCDateTime()),
        ("end_reason", sa.String(32)),
        ("ended_by", sa.String(100)),
    ]
    preparer = conn.dialect.identifier_preparer
    for name, type_ in columns:
        ddl = type_.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE sessions ADD COLUMN {preparer.quote(name)} {ddl}")
    conn.exec_driver_sql("CREATE INDEX ix_sessions_live ON sessions (ended_at, app_name)")
    conn.exec_driver_sql("CREATE INDEX ix_sessions_last_heartbeat ON sessions (last_heartbeat)")


def _v3_audit(conn: sa.Connection) -> None:
    """Audit log of admin actions."""
    meta = sa.MetaData()
    sa.Table(
        "audit_log",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("remote_addr", sa.String(64)),
        sa.Index("ix_audit_log_at", "at"),
    ).create(conn)


def _v4_agents(conn: sa.Connection) -> None:
    """One agent per Panel process: its facts, the sessions it tracks, and the commands queued for it."""
    meta = sa.MetaData()
    sa.Table(
        "agents",
        meta,
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("command", sa.String(1000), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("cpu_percent", sa.Float()),
        sa.Column("rss_bytes", sa.BigInteger()),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("exited_at", UTCDateTime()),
        sa.Index("ix_agents_last_seen", "last_seen"),
    ).create(conn)
    sa.Table(
        "commands",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Index("ix_commands_agent", "agent_id", "id"),
    ).create(conn)
    conn.exec_driver_sql("ALTER TABLE sessions ADD COLUMN agent_id VARCHAR(64)")
    conn.exec_driver_sql("CREATE INDEX ix_sessions_agent ON sessions (agent_id, ended_at)")


def _v5_liveness(conn: sa.Connection) -> None:
    """Browser liveness (visibility, last interaction, websocket gone) and a change stamp for cursors.

    ``changed_at`` moves on every change an operator can see except a heartbeat, so a dashboard can
    ask for the rows changed since its last look; existing rows take their latest known time.
    """
    columns: list[tuple[str, sa.types.TypeEngine[Any]]] = [
        ("visibility", sa.String(16)),
        ("last_interaction_at", UTCDateTime()),
        ("disconnected_at", UTCDateTime()),
        ("changed_at", UTCDateTime()),
    ]
    preparer = conn.dialect.identifier_preparer
    for name, type_ in columns:
        ddl = type_.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE sessions ADD COLUMN {preparer.quote(name)} {ddl}")
    conn.exec_driver_sql("UPDATE sessions SET changed_at = COALESCE(ended_at, kill_requested_at, last_heartbeat)")
    conn.exec_driver_sql("CREATE INDEX ix_sessions_changed ON sessions (changed_at)")


def _v6_pending_kills(conn: sa.Connection) -> None:
    """A partial index of live sessions with a kill pending: every sync asks for its agent's (usually none)."""
    meta = sa.MetaData()
    table = sa.Table(
        "sessions",
        meta,
        sa.Column("agent_id", sa.String(64)),
        sa.Column("kill_requested", sa.Boolean()),
        sa.Column("ended_at", UTCDateTime()),
    )
    pending = sa.and_(table.c.kill_requested, table.c.ended_at.is_(None))
    sa.Index("ix_sessions_kill_pending", table.c.agent_id, sqlite_where=pending, postgresql_where=pending).create(conn)


def _v7_loop_health(conn: sa.Connection) -> None:
    """Loop health of each agent's IOLoop (latest interval), its stall counters, and the stalls themselves."""
    columns: list[tuple[str, sa.types.TypeEngine[Any]]] = [
        ("loop_at", UTCDateTime()),
        ("loop_interval_s", sa.Float()),
        ("loop_probes", sa.Integer()),
        ("loop_lag_p50_ms", sa.Float()),
        ("loop_lag_p99_ms", sa.Float()),
        ("loop_lag_max_ms", sa.Float()),
        ("loop_busy", sa.Float()),
        ("pool_size", sa.Integer()),
        ("pool_queue", sa.Integer()),
        ("pool_busy", sa.Integer()),
        ("stalls_dropped_agent", sa.BigInteger()),
        ("stalls_dropped_server", sa.BigInteger()),
        ("stall_window_at", UTCDateTime()),
        ("stall_window_count", sa.Integer()),
    ]
    preparer = conn.dialect.identifier_preparer
    for name, type_ in columns:
        ddl = type_.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE agents ADD COLUMN {preparer.quote(name)} {ddl}")
    meta = sa.MetaData()
    sa.Table(
        "stalls",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("app_name", sa.String(200)),
        sa.Column("session_id", sa.String(128)),
        sa.Column("function", sa.String(200)),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("stack", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("agent_id", "seq", name="uq_stalls_agent_seq"),
        sa.Index("ix_stalls_started", "started_at"),
        sa.Index("ix_stalls_session", "session_id"),
    ).create(conn)


def _v8_session_cost(conn: sa.Connection) -> None:
    """What each session costs (one JSON document per session, as its agent last measured it) and what ended
    sessions left running (a JSON list per agent)."""
    json_ddl = sa.JSON().compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE sessions ADD COLUMN cost {json_ddl}")
    conn.exec_driver_sql(f"ALTER TABLE agents ADD COLUMN leftovers {json_ddl}")


def _v9_notices(conn: sa.Connection) -> None:
    """Announcements shown in live pages, and kills with notice (a countdown, then the kill at a deadline)."""
    meta = sa.MetaData()
    sa.Table(
        "announcements",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("apps", sa.JSON()),
        sa.Column("hosts", sa.JSON()),
        sa.Column("session_ids", sa.JSON()),
        sa.Column("until", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("removed_at", UTCDateTime()),
        sa.Column("removed_by", sa.String(100)),
        sa.Index("ix_announcements_removed", "removed_at"),
    ).create(conn)
    sa.Table(
        "pending_kills",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(128)),
        sa.Column("app_name", sa.String(200)),
        sa.Column("deadline", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("cancelled_at", UTCDateTime()),
        sa.Column("cancelled_by", sa.String(100)),
        sa.Column("fired_at", UTCDateTime()),
        sa.Index("ix_pending_kills_open", "fired_at", "cancelled_at", "deadline"),
    ).create(conn)


def _v10_drain(conn: sa.Connection) -> None:
    """A Panel process drained for a deploy: since when, until when, the users' message, and who asked."""
    columns: list[tuple[str, sa.types.TypeEngine[Any]]] = [
        ("drain_at", UTCDateTime()),
        ("drain_deadline", UTCDateTime()),
        ("drain_message", sa.String(500)),
        ("drain_by", sa.String(100)),
    ]
    preparer = conn.dialect.identifier_preparer
    for name, type_ in columns:
        ddl = type_.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE agents ADD COLUMN {preparer.quote(name)} {ddl}")


def _v11_policies(conn: sa.Connection) -> None:
    """Session limits and culling exemptions (one JSON document, in one row), and each session's exempt flag."""
    sa.Table(
        "policies",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
    ).create(conn)
    conn.exec_driver_sql("ALTER TABLE sessions ADD COLUMN exempt BOOLEAN NOT NULL DEFAULT false")


def _v12_shared_config(conn: sa.Connection) -> None:
    """Shared app configuration: each key's current value and version, every version's history, and the
    config apps each agent follows (pushed to it on the command long-poll)."""
    meta = sa.MetaData()
    sa.Table(
        "config_entries",
        meta,
        sa.Column("app", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Index("ix_config_entries_revision", "revision"),
    ).create(conn)
    sa.Table(
        "config_history",
        meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text()),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reverted_to", sa.Integer()),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("app", "key", "version", name="uq_config_history_version"),
        sa.Index("ix_config_history_at", "at"),
    ).create(conn)
    json_ddl = sa.JSON().compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE agents ADD COLUMN config_apps {json_ddl}")
    conn.exec_driver_sql("ALTER TABLE agents ADD COLUMN config_epoch INTEGER")


def _v13_listing_order(conn: sa.Connection) -> None:
    """An index in the live listing's order (newest first, then by id): ``GET /sessions`` reads its rows in
    order instead of sorting them (at 10,000 live sessions the sort took a third of SQLite's time)."""
    conn.exec_driver_sql("CREATE INDEX ix_sessions_listing ON sessions (ended_at, start_time DESC, session_id)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "sessions table (prototype shape)", _v1_sessions),
    Migration(2, "history, placement and kill intent columns", _v2_history),
    Migration(3, "audit log", _v3_audit),
    Migration(4, "agents and their command queue", _v4_agents),
    Migration(5, "browser liveness columns and the change stamp", _v5_liveness),
    Migration(6, "partial index of pending kills", _v6_pending_kills),
    Migration(7, "loop health of agents and their stalls", _v7_loop_health),
    Migration(8, "session cost and leftovers", _v8_session_cost),
    Migration(9, "announcements and kills with notice", _v9_notices),
    Migration(10, "drained Panel processes", _v10_drain),
    Migration(11, "policies: session limits and exemptions", _v11_policies),
    Migration(12, "shared app configuration", _v12_shared_config),
    Migration(13, "index in the live listing's order", _v13_listing_order),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: sa.Connection) -> int:
    """Highest applied version; 0 for an empty database."""
    if not sa.inspect(conn).has_table("schema_migrations"):
        return 0
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema_migrations.c.version), 0))).scalar_one())


def upgrade(conn: sa.Connection, *, target: int = LATEST_VERSION) -> list[int]:
    """Apply every migration above the database's version up to ``target``; return the versions applied."""
    if target > LATEST_VERSION:
        raise ValueError(f"unknown schema version {target}; this release knows up to {LATEST_VERSION}")
    version = current_version(conn)
    if version > LATEST_VERSION:
        raise RuntimeError(
            f"database schema is version {version}, newer than this release supports ({LATEST_VERSION}); "
            "upgrade panel-session-monitor"
        )
    schema_migrations.create(conn, checkfirst=True)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if version < migration.version <= target:
            migration.apply(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=migration.version, description=migration.description, applied_at=datetime.now(UTC)
                )
            )
            applied.append(migration.version)
    return applied
