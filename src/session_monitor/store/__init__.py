"""Persistence: SQLite (default, one server process) or PostgreSQL (replicas).

One shape: a class per table group over one :class:`Database` and clock. :class:`Store` holds the sessions
and the audit log (writes in ``repository``; reads in ``reads``, ``changes`` and ``stats``, its base
classes over ``base.StoreBase``); ``agents.AgentStore`` holds the agents and their command queue. The SQL
lives in those modules; ``listing`` renders session rows as JSON in SQL, ``render`` in Python; ``engine``
owns the connections, the read threads and the single write path, ``streams`` the chunked reads.
"""

from __future__ import annotations

from session_monitor.store.engine import Database, make_database
from session_monitor.store.repository import SessionFilters, Store

__all__ = ["Database", "SessionFilters", "Store", "make_database"]
