"""The monitor dashboard: a Panel app that talks to the server only through its REST API."""

from __future__ import annotations

from session_monitor.dashboard.app import create_dashboard, serve_dashboard

__all__ = ["create_dashboard", "serve_dashboard"]
