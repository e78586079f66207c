"""A tracked app that shows banners through the client's banner API from another thread (as the agent does).

``?template=1`` serves it in a ``FastListTemplate``. Buttons: an announcement whose text looks like HTML, a
countdown of 90 s, and clearing both.
"""

import threading
from datetime import UTC, datetime, timedelta

import panel as pn

from session_monitor import SessionClient
from session_monitor.client import panel as binding
from session_monitor.client.banner import Banner

pn.extension()

tracker = SessionClient.get_tracker(app_name="banners")
sid = tracker.session_id


def off_loop(fn, *args):
    threading.Thread(target=fn, args=args, daemon=True).start()


def announce(_event: object) -> None:
    item = Banner("announcement:1", "Maintenance at <b>18:00</b> & after", level="warning", dismissible=True)
    off_loop(binding.show_banner, sid, item)


def countdown(_event: object) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=90)
    off_loop(binding.show_banner, sid, Banner("kill", "maintenance", level="error", deadline=deadline))


def clear(_event: object) -> None:
    off_loop(binding.remove_banner, sid, "announcement:1")
    off_loop(binding.remove_banner, sid, "kill")


buttons = [pn.widgets.Button(name=name) for name in ("Announce", "Countdown", "Clear")]
for button, handler in zip(buttons, (announce, countdown, clear), strict=True):
    button.on_click(handler)
body = pn.Column("# Banners app", pn.pane.Str(f"session {sid}", name="sid"), pn.Row(*buttons))
if pn.state.session_args.get("template"):
    template = pn.template.FastListTemplate(title="Banners in a template")
    template.sidebar.append(pn.widgets.Select(name="Region", options=["north", "south"]))
    template.main.append(body)
    template.servable()
else:
    body.servable()
