"""Named defaults, with their units. Every setting documents which one it uses."""

from __future__ import annotations

SERVER_URL = "http://127.0.0.1:8000"
"""Where clients, the CLI and the dashboard find the server (``SESSION_MONITOR_URL``)."""

API_HOST = "127.0.0.1"
"""The server binds to loopback unless told otherwise."""

API_PORT = 8000
"""The REST API's port (the prototype's)."""

DASHBOARD_PORT = 5000
"""The dashboard's port (the prototype's)."""

DATA_DIR = "data"
"""Local folder (relative to the working directory) holding the default SQLite database."""

SQLITE_FILENAME = "session-monitor.sqlite3"
"""File name of the default SQLite database inside ``DATA_DIR``."""

STALE_AFTER_S = 120.0
"""A live session with no heartbeat for this many seconds is shown as ``stale`` (the prototype's 2 min)."""

EXPIRE_AFTER_S = 600.0
"""A live session with no heartbeat for this many seconds is ended as ``expired`` (the prototype's 10 min)."""

REAPER_INTERVAL_S = 15.0
"""Seconds between two passes of the server's reaper."""

HISTORY_RETENTION_S = 7 * 24 * 3600.0
"""Ended sessions are kept as history for this long (7 days), then deleted."""

AUDIT_RETENTION_S = 90 * 24 * 3600.0
"""Audit log entries are kept for this long (90 days), then deleted."""

MAX_BODY_BYTES = 64 * 1024
"""Largest request body the server accepts; larger ones get 413."""

MAX_SYNC_BODY_BYTES = 16 * 1024 * 1024
"""Largest agent sync body: a full sync of 20,000 sessions fits."""

SYNC_INTERVAL_S = 5.0
"""Agents sync (and so heartbeat all their sessions) this often; status changes go out within ``FLUSH_DELAY_S``."""

PROCESS_LOST_AFTER_S = 10.0
"""An agent whose long-poll dropped, and which neither syncs nor polls again for this long (two sync intervals),
is lost: its sessions end as ``process_lost``. A live agent re-polls within 2 s and syncs every sync interval."""

LOST_CHECK_INTERVAL_S = 1.0
"""How often the server looks at the agents whose long-poll dropped (no database work when there are none)."""

FLUSH_DELAY_S = 0.25
"""An agent pushes a change (new session, status, end) at most this long after it happened."""

LONG_POLL_S = 25.0
"""How long an agent's command long-poll is held open by the server."""

CLEANUP_OLDER_THAN_MINUTES = 10
"""Default of ``DELETE /sessions/stale?older_than_minutes=`` (the prototype's)."""

DRAIN_DEADLINE_S = 600.0
"""A drain's deadline when none is given (10 minutes): then the drained process's sessions end as ``drained``."""

DRAIN_MESSAGE = "This server is going down for maintenance: save your work and reload the page to continue."
"""What a drained process's users read above the countdown when the operator gave no message."""

RESTART_MESSAGE = "This server is restarting: reload the page in a moment to continue."
"""What the open pages of a ``panel serve`` that got SIGTERM show as their websockets close."""

HTTP_TIMEOUT_S = 10.0
"""Timeout of one CLI request to the server."""

SERVER_KEEP_ALIVE_S = 65.0
"""How long the server keeps an idle HTTP connection open. Longer than clients keep theirs (httpx: 5 s), so a
client never sends a request on a connection the server is closing at that moment (uvicorn's 5 s default made
the two expire together: "Server disconnected without sending a response")."""

CONFIG_HISTORY_RETENTION_S = 90 * 24 * 3600.0
"""Shared-config versions are kept this long (the current version of a key always)."""

CONFIG_HISTORY_VERSIONS = 1000
"""Most versions kept per shared-config key."""
