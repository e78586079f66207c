"""The reaper: ends silent sessions as ``expired`` and drops history, audit entries, stalls and past notices past
retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from session_monitor import defaults
from session_monitor.store.agents import COMMAND_RETENTION, AgentStore
from session_monitor.store.config import ConfigStore
from session_monitor.store.notices import NoticeStore
from session_monitor.store.repository import SYSTEM, Store
from session_monitor.store.stalls import StallStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapResult:
    expired: int
    history_purged: int
    audit_purged: int


async def reap_once(
    store: Store,
    *,
    expire_after_s: float,
    history_retention_s: float,
    audit_retention_s: float,
    agent_store: AgentStore | None = None,
    config_store: ConfigStore | None = None,
    config_retention: tuple[float, int] = (defaults.CONFIG_HISTORY_RETENTION_S, defaults.CONFIG_HISTORY_VERSIONS),
) -> ReapResult:
    """One pass at ``store.clock()``: tests call this directly and move the clock instead of sleeping."""
    now = store.clock()
    if agent_store is not None:
        await agent_store.purge(
            commands_before=now - COMMAND_RETENTION, agents_before=now - timedelta(seconds=history_retention_s)
        )
    expired = await store.end_silent_sessions(timedelta(seconds=expire_after_s), SYSTEM, audit=False)
    history, audit = await store.purge(
        history_before=now - timedelta(seconds=history_retention_s),
        audit_before=now - timedelta(seconds=audit_retention_s),
    )
    await StallStore(store).purge(before=now - timedelta(seconds=audit_retention_s))  # kept as long as the audit log
    await NoticeStore(store).purge(before=now - timedelta(seconds=audit_retention_s))  # so are past notices
    if config_store is not None:
        await config_store.purge(before=now - timedelta(seconds=config_retention[0]), keep_versions=config_retention[1])
    if expired or history or audit:
        logger.info("reaper: %d sessions expired, %d history rows and %d audit entries purged", expired, history, audit)
    return ReapResult(expired, history, audit)


async def run_reaper(
    store: Store,
    *,
    interval_s: float,
    stop: asyncio.Event,
    expire_after_s: float,
    history_retention_s: float,
    audit_retention_s: float,
    on_result: Callable[[ReapResult], None] | None = None,
    agent_store: AgentStore | None = None,
    gate: Callable[[], Awaitable[bool]] | None = None,
    config_store: ConfigStore | None = None,
    config_retention: tuple[float, int] = (defaults.CONFIG_HISTORY_RETENTION_S, defaults.CONFIG_HISTORY_VERSIONS),
) -> None:
    """First pass at once, then one every ``interval_s``, compensating for the time a pass takes.

    ``gate``: asked before each pass whether this process should reap now (replicas on one PostgreSQL:
    only the holder of the reaper's advisory lock does); a refused pass is skipped, not retried early.
    """
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            if gate is None or await gate():
                result = await reap_once(
                    store,
                    expire_after_s=expire_after_s,
                    history_retention_s=history_retention_s,
                    audit_retention_s=audit_retention_s,
                    agent_store=agent_store,
                    config_store=config_store,
                    config_retention=config_retention,
                )
                if on_result is not None:
                    on_result(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed; retrying in %.0f s", interval_s)
        next_at += interval_s
        delay = max(0.0, next_at - time.monotonic())
        if delay == 0.0:
            next_at = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
