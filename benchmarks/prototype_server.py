"""A prototype-style baseline server for the listing benchmark: NOT the prototype's code, a minimal model of it.

Written here from the prototype's design notes (``server.py``: a FastAPI app on ``sqlite3``, one table, thread-local
connections, pydantic request and response models, ``GET /sessions`` computing ``duration_seconds`` and
``is_stale`` per row). Only what the benchmark calls: register, heartbeat, list. Timestamps are stored as ISO text,
as the prototype's ``datetime.now().isoformat()`` did.

Run: ``python benchmarks/prototype_server.py DB_PATH PORT`` (uvicorn, one process); ``seed(path, first, count)``
fills its table directly.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import uuid
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

STALE_AFTER_S = 120.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    app_name TEXT NOT NULL,
    user_id TEXT,
    start_time TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'idle',
    current_task TEXT,
    kill_requested INTEGER NOT NULL DEFAULT 0
)
"""


class SessionCreate(BaseModel):
    app_name: str
    user_id: str | None = None


class SessionCreated(BaseModel):
    session_id: str


class HeartbeatResponse(BaseModel):
    kill_requested: bool


class SessionResponse(BaseModel):
    session_id: str
    app_name: str
    user_id: str | None
    start_time: datetime
    last_heartbeat: datetime
    duration_seconds: float
    status: str
    current_task: str | None
    is_stale: bool
    kill_requested: bool


class SessionListResponse(BaseModel):
    sessions: list[SessionResponse]


def create_app(path: str) -> FastAPI:
    app = FastAPI()
    local = threading.local()

    def db() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(path, timeout=30)
            conn.row_factory = sqlite3.Row
        return conn

    with sqlite3.connect(path) as conn:
        conn.execute(SCHEMA)

    @app.post("/sessions", response_model=SessionCreated)
    def create_session(body: SessionCreate) -> SessionCreated:
        sid, now = str(uuid.uuid4()), datetime.now(UTC).isoformat()
        conn = db()
        conn.execute(
            "INSERT INTO sessions (session_id, app_name, user_id, start_time, last_heartbeat) VALUES (?, ?, ?, ?, ?)",
            (sid, body.app_name, body.user_id, now, now),
        )
        conn.commit()
        return SessionCreated(session_id=sid)

    @app.post("/sessions/{session_id}/heartbeat", response_model=HeartbeatResponse)
    def heartbeat(session_id: str) -> HeartbeatResponse:
        conn = db()
        conn.execute(
            "UPDATE sessions SET last_heartbeat = ? WHERE session_id = ?", (datetime.now(UTC).isoformat(), session_id)
        )
        conn.commit()
        row = conn.execute("SELECT kill_requested FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            raise HTTPException(404, "Session not found")
        return HeartbeatResponse(kill_requested=bool(row["kill_requested"]))

    @app.get("/sessions", response_model=SessionListResponse)
    def list_sessions() -> SessionListResponse:
        now = datetime.now(UTC)
        out = []
        for row in db().execute("SELECT * FROM sessions ORDER BY start_time DESC").fetchall():
            start, beat = datetime.fromisoformat(row["start_time"]), datetime.fromisoformat(row["last_heartbeat"])
            out.append(
                SessionResponse(
                    session_id=row["session_id"],
                    app_name=row["app_name"],
                    user_id=row["user_id"],
                    start_time=start,
                    last_heartbeat=beat,
                    duration_seconds=(now - start).total_seconds(),
                    status=row["status"],
                    current_task=row["current_task"],
                    is_stale=(now - beat).total_seconds() > STALE_AFTER_S,
                    kill_requested=bool(row["kill_requested"]),
                )
            )
        return SessionListResponse(sessions=out)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def seed(path: str, first: int, count: int) -> None:
    """``count`` sessions named like ``server_throughput``'s, written straight into the table."""
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as conn:
        conn.execute(SCHEMA)
        conn.executemany(
            "INSERT INTO sessions (session_id, app_name, user_id, start_time, last_heartbeat) VALUES (?, ?, ?, ?, ?)",
            [(f"bench-{i:06d}", f"app-{i % 7}", f"user-{i}", now, now) for i in range(first, first + count)],
        )


if __name__ == "__main__":
    uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
