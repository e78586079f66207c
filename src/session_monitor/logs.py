"""Logging configuration for the CLI; library code never adds handlers."""

from __future__ import annotations

from typing import Any


def default_log_config(verbose: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``session-monitor`` commands (uvicorn's loggers included)."""
    level = "DEBUG" if verbose else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "session_monitor": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "uvicorn.access": {"level": "INFO" if verbose else "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }
