"""The current schema as SQLAlchemy 2.0 tables. ``migrations`` builds it step by step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; all timestamps must be timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SessionRow(Base):
    """A tracked Panel session: live while ``ended_at`` is null, history afterwards."""

    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    app_name: Mapped[str] = mapped_column(sa.String(200))
    user_id: Mapped[str | None] = mapped_column(sa.String(200))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(sa.String(32))
    current_task: Mapped[str | None] = mapped_column(sa.String(500))
    kill_requested: Mapped[bool] = mapped_column(sa.Boolean())
    # v2
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None] = mapped_column(sa.Integer())
    task_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kill_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kill_requested_by: Mapped[str | None] = mapped_column(sa.String(100))
    kill_reason: Mapped[str | None] = mapped_column(sa.String(500))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(sa.String(32))
    ended_by: Mapped[str | None] = mapped_column(sa.String(100))
    # v4
    agent_id: Mapped[str | None] = mapped_column(sa.String(64))
    # v5
    visibility: Mapped[str | None] = mapped_column(sa.String(16))
    last_interaction_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # v8: what the session costs (``protocol.SessionCost``), as its agent last sent it
    cost: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    # v9: idle culling and maximum age never end it (the app marked it, or a policy exempts it)
    exempt: Mapped[bool] = mapped_column(sa.Boolean(), server_default=sa.false())


class AuditRow(Base):
    """One admin action: who did what to which target, and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(100))
    action: Mapped[str] = mapped_column(sa.String(32))
    target: Mapped[str] = mapped_column(sa.String(300))
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))


class AgentRow(Base):
    """One client agent, i.e. one Panel server process."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer())
    command: Mapped[str] = mapped_column(sa.String(1000))
    versions: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    cpu_percent: Mapped[float | None] = mapped_column(sa.Float())
    rss_bytes: Mapped[int | None] = mapped_column(sa.BigInteger())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    exited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # v8: what its ended sessions left running (``protocol.Leftover`` objects)
    leftovers: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON(none_as_null=True))
    # v9: the shared-config apps it follows, and the epoch of that list
    config_apps: Mapped[list[str] | None] = mapped_column(sa.JSON(none_as_null=True))
    config_epoch: Mapped[int | None] = mapped_column(sa.Integer())
    # v7: the latest loop health, and the stall counters
    loop_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    loop_interval_s: Mapped[float | None] = mapped_column(sa.Float())
    loop_probes: Mapped[int | None] = mapped_column(sa.Integer())
    loop_lag_p50_ms: Mapped[float | None] = mapped_column(sa.Float())
    loop_lag_p99_ms: Mapped[float | None] = mapped_column(sa.Float())
    loop_lag_max_ms: Mapped[float | None] = mapped_column(sa.Float())
    loop_busy: Mapped[float | None] = mapped_column(sa.Float())
    pool_size: Mapped[int | None] = mapped_column(sa.Integer())
    pool_queue: Mapped[int | None] = mapped_column(sa.Integer())
    pool_busy: Mapped[int | None] = mapped_column(sa.Integer())
    stalls_dropped_agent: Mapped[int | None] = mapped_column(sa.BigInteger())
    stalls_dropped_server: Mapped[int | None] = mapped_column(sa.BigInteger())
    stall_window_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stall_window_count: Mapped[int | None] = mapped_column(sa.Integer())
    # v9: drained for a deploy (unready; its sessions end as ``drained`` at the deadline)
    drain_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    drain_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    drain_message: Mapped[str | None] = mapped_column(sa.String(500))
    drain_by: Mapped[str | None] = mapped_column(sa.String(100))


class StallRow(Base):
    """The IOLoop of an agent's process blocked: for how long, in which session's work, with which stack."""

    __tablename__ = "stalls"
    __table_args__ = (sa.UniqueConstraint("agent_id", "seq", name="uq_stalls_agent_seq"),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(sa.String(64))
    seq: Mapped[int] = mapped_column(sa.BigInteger())
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer())
    app_name: Mapped[str | None] = mapped_column(sa.String(200))
    session_id: Mapped[str | None] = mapped_column(sa.String(128))
    function: Mapped[str | None] = mapped_column(sa.String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_s: Mapped[float] = mapped_column(sa.Float())
    final: Mapped[bool] = mapped_column(sa.Boolean())
    stack: Mapped[list[Any]] = mapped_column(sa.JSON())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CommandRow(Base):
    """A command for an agent (a kill), kept until the agent has had time to fetch it."""

    __tablename__ = "commands"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(sa.String(64))
    session_id: Mapped[str] = mapped_column(sa.String(128))
    kind: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(500))
    actor: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnnouncementRow(Base):
    """A message shown as a banner in the live pages it targets (all when no target), until removed or ``until``."""

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    message: Mapped[str] = mapped_column(sa.String(500))
    level: Mapped[str] = mapped_column(sa.String(16))
    apps: Mapped[list[str] | None] = mapped_column(sa.JSON(none_as_null=True))
    hosts: Mapped[list[str] | None] = mapped_column(sa.JSON(none_as_null=True))
    session_ids: Mapped[list[str] | None] = mapped_column(sa.JSON(none_as_null=True))
    until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(sa.String(100))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_by: Mapped[str | None] = mapped_column(sa.String(100))


class PendingKillRow(Base):
    """A kill with notice: of one session or of every session of an app, at ``deadline`` unless cancelled."""

    __tablename__ = "pending_kills"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    session_id: Mapped[str | None] = mapped_column(sa.String(128))
    app_name: Mapped[str | None] = mapped_column(sa.String(200))
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(sa.String(100))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_by: Mapped[str | None] = mapped_column(sa.String(100))
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PolicyRow(Base):
    """The policies (``protocol.Policies``): one row, id 1."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(sa.String(100))


class ConfigEntryRow(Base):
    """A shared-config key's current value (JSON text; null once deleted) and version."""

    __tablename__ = "config_entries"

    app: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    value: Mapped[str | None] = mapped_column(sa.Text())
    version: Mapped[int] = mapped_column(sa.Integer())
    revision: Mapped[int] = mapped_column(sa.BigInteger(), index=True)
    deleted: Mapped[bool] = mapped_column(sa.Boolean())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(sa.String(100))


class ConfigHistoryRow(Base):
    """One version of a shared-config key: what it set, who wrote it and when."""

    __tablename__ = "config_history"
    __table_args__ = (sa.UniqueConstraint("app", "key", "version", name="uq_config_history_version"),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(sa.String(200))
    key: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[int] = mapped_column(sa.Integer())
    value: Mapped[str | None] = mapped_column(sa.Text())
    deleted: Mapped[bool] = mapped_column(sa.Boolean())
    action: Mapped[str] = mapped_column(sa.String(16))
    reverted_to: Mapped[int | None] = mapped_column(sa.Integer())
    actor: Mapped[str] = mapped_column(sa.String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


sessions: sa.Table = SessionRow.__table__  # type: ignore[assignment]
audit_log: sa.Table = AuditRow.__table__  # type: ignore[assignment]
agents: sa.Table = AgentRow.__table__  # type: ignore[assignment]
commands: sa.Table = CommandRow.__table__  # type: ignore[assignment]
stalls: sa.Table = StallRow.__table__  # type: ignore[assignment]
announcements: sa.Table = AnnouncementRow.__table__  # type: ignore[assignment]
pending_kills: sa.Table = PendingKillRow.__table__  # type: ignore[assignment]
policies: sa.Table = PolicyRow.__table__  # type: ignore[assignment]
config_entries: sa.Table = ConfigEntryRow.__table__  # type: ignore[assignment]
config_history: sa.Table = ConfigHistoryRow.__table__  # type: ignore[assignment]
