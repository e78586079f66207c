"""The client side: what Panel apps import. Never imports the server's dependencies."""

from __future__ import annotations
