"""A guard on Panel's ``/autoload.js`` handler, so a request without a login gets a 403 and no traceback.

Panel's (1.9) handler awaits Bokeh's ``@authenticated`` ``get_session()``, which for a visitor who is not logged
in sends a redirect and returns ``None``: the ``await None`` then raises ``TypeError`` on the server's IOLoop, and
every unauthenticated probe of ``/autoload.js`` leaves a traceback in the log. The dashboard is never embedded in
another page, so its embedding script only ever answers logged-in operators; everyone else gets a plain 403.
"""

from __future__ import annotations

import logging
from typing import Any

from bokeh.server import urls
from panel.io.server import AutoloadJsHandler

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


def guard_autoload() -> None:
    """Route ``/autoload.js`` of every app served from now on in this process through the guard (idempotent)."""
    for i, pattern in enumerate(urls.per_app_patterns):
        if pattern[0] == r"/autoload.js" and pattern[1] is AutoloadJsHandler:
            urls.per_app_patterns[i] = (pattern[0], GuardedAutoloadJsHandler, *pattern[2:])
