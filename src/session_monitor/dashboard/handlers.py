"""Guards on Panel's ``/autoload.js`` and ``/ws`` handlers, so a probe gets a 403 or 400 and no traceback.

Panel's (1.9) handler awaits Bokeh's ``@authenticated`` ``get_session()``, which for a visitor who is not logged
in sends a redirect and returns ``None``: the ``await None`` then raises ``TypeError`` on the server's IOLoop, and
every unauthenticated probe of ``/autoload.js`` leaves a traceback in the log. The dashboard is never embedded in
another page, so its embedding script only ever answers logged-in operators; everyone else gets a plain 403.

A websocket handshake that does not offer Bokeh's ``bokeh`` subprotocol (a scanner's bare ``/ws`` upgrade) was
accepted and then raised ``ProtocolError`` in Bokeh's ``open()``: it now gets a 400 before the handshake.
"""

from __future__ import annotations

import logging
from typing import Any

from bokeh.server import urls
from panel.io.server import AutoloadJsHandler, WSHandler

logger = logging.getLogger(__name__)


class GuardedAutoloadJsHandler(AutoloadJsHandler):
    """Panel's autoload handler that answers 403 before anything else when the visitor has no login."""

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not self.current_user:
            logger.debug("autoload.js without a login from %s: 403", self.request.remote_ip)
            self.set_status(403)
            self.finish("403: log in first\n")
            return
        await super().get(*args, **kwargs)


class GuardedWSHandler(WSHandler):
    """Panel's websocket handler that refuses, before the handshake, an upgrade not offering ``bokeh``."""

    async def prepare(self) -> None:
        await super().prepare()  # type: ignore[no-untyped-call]
        if self._finished:
            return  # Panel already answered (403 without a login)
        offered = self.request.headers.get("Sec-WebSocket-Protocol", "")
        if self.request.headers.get("Upgrade", "").lower() == "websocket" and "bokeh" not in {
            p.strip() for p in offered.split(",")
        }:
            logger.debug("websocket without the bokeh subprotocol from %s: 400", self.request.remote_ip)
            self.set_status(400)
            self.finish("400: not a Bokeh websocket\n")


GUARDS = {r"/autoload.js": (AutoloadJsHandler, GuardedAutoloadJsHandler), r"/ws": (WSHandler, GuardedWSHandler)}


def guard_autoload() -> None:
    """Route ``/autoload.js`` and ``/ws`` of every app served from now on in this process through the guards
    (idempotent)."""
    for i, pattern in enumerate(urls.per_app_patterns):
        original, guarded = GUARDS.get(pattern[0], (None, None))
        if guarded is not None and pattern[1] is original:
            urls.per_app_patterns[i] = (pattern[0], guarded, *pattern[2:])
