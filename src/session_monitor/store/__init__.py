"""Persistence: SQLite (default, one server process) or PostgreSQL (replicas). All SQL lives in ``repository``."""

from __future__ import annotations

from session_monitor.store.engine import Database, make_database
from session_monitor.store.repository import SessionFilters, Store

__all__ = ["Database", "SessionFilters", "Store", "make_database"]
