"""Panel integration: finding the current session, ending it, and killing it on its own IOLoop.

With ``dispatch.py`` (Bokeh's dispatch, timed per session), ``docsize.py`` and ``usage.py`` (what each
session costs), the only client modules that import panel, bokeh or tornado. Every callback
handed to Panel is defined here, in an imported module: Panel clears the
served script's globals before ``on_session_destroyed`` runs.

A kill, applied with ``doc.add_next_tick_callback`` on the session's IOLoop:
every ``on_kill`` callback once (awaited if async; one raising does not stop
the others), the page's one notice set to the reason, each websocket closed with code
1001 and the reason, then the session discarded at once through Bokeh's
application context, so its ``on_session_destroyed`` hooks run now instead of
15-32 s later.

Liveness (``liveness.py``) follows each session's websockets from the moment the session exists: the
session is registered with the agent when its first websocket connects (a ``--num-procs`` copy that
never gets one is never shown), gets the hidden browser component (``browser.py``) then, and is ended
as ``browser_lost`` or ``expired`` through the same path as a kill (:func:`_end_on_loop`).

This module never imports the tracker (``tracker.py`` imports it): it keeps its own table of
:class:`PanelBinding` by session id, sees a tracker through the :class:`Tracked` protocol and calls
only its public methods; the tracker sees a binding through its ``SessionBinding`` protocol. A kill
goes agent -> ``tracker.request_kill`` -> ``binding.schedule_kill`` -> :func:`_end_on_loop` (callbacks,
``tracker.finish``, notice, close, discard).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import panel as pn
from bokeh.document import Document
from panel.io.state import set_curdoc
from tornado.ioloop import IOLoop

from session_monitor.client import (
    banner,
    culling,
    dispatch,
    ending,
    exiting,
    notices,
    panel_drain,
    panel_loop,
    panel_notices,
    panel_restart,
    refusal,
    threads,
)
from session_monitor.client.agent import MAX_REMEMBERED_KILLS, current_agent
from session_monitor.client.browser import make_component
from session_monitor.client.callbacks import await_callbacks
from session_monitor.client.limits import REFUSED
from session_monitor.client.liveness import Liveness, LivenessConfig, Watch, resolve_liveness
from session_monitor.client.usage import Usage

logger = logging.getLogger(__name__)

DEFAULT_KILL_MESSAGE = "This session was ended by an administrator."
"""Shown to the user when a kill gives no reason."""

EXPIRED_MESSAGE = "This session has expired"
"""Shown to the user of a session ended by idle culling or its maximum age (followed by why)."""

_docs: weakref.WeakValueDictionary[str, Document] = weakref.WeakValueDictionary()
_docs_lock = threading.Lock()
_bindings: dict[str, PanelBinding] = {}
"""The bound trackers by session id (under ``_docs_lock``); a tracker leaves when it ends."""
_refused: OrderedDict[str, tuple[str, str]] = OrderedDict()
"""Expired or drained session ids, with reason and message: a page reconnecting under one is ended again."""
_liveness: Liveness | None = None
_liveness_config: LivenessConfig | None = None


def session_key() -> str | None:
    """The id of the Panel session whose code runs on this thread, if any (remembering its document)."""
    try:
        doc = pn.state.curdoc
        context = doc.session_context if doc is not None else None
    except Exception:
        return None
    if context is None or doc is None:
        return None
    session_id = str(context.id)
    if session_id not in _docs:
        with _docs_lock:
            _docs[session_id] = doc
    return session_id


threads.add_finder(session_key)
dispatch.install()
refusal.install()
_usage: Usage | None = None


def _use_usage() -> None:
    """Have the agent send each session's cost and the process's leftovers (one :class:`Usage` per process)."""
    global _usage
    agent = current_agent()
    if agent is None:
        return
    if _usage is None:
        _usage = Usage()
    agent.use(_usage)


def _live_docs() -> list[Document]:
    return [doc for sid in live_session_ids() if (doc := _docs.get(sid)) is not None]


exiting.on_sigterm_notice(partial(panel_restart.tell_pages, _live_docs))


def live_session_ids() -> list[str]:
    """The sessions bound here (any thread)."""
    with _docs_lock:
        return list(_bindings)


def show_banner(session_id: str, item: banner.Banner) -> bool:
    """From any thread: show ``item`` in the session's page (on its IOLoop); ``False`` if the session is gone."""
    doc = _docs.get(session_id)
    return doc is not None and banner.show(doc, item)


def remove_banner(session_id: str, key: str) -> bool:
    """From any thread: take the banner ``key`` away from the session's page; ``False`` if the session is gone."""
    doc = _docs.get(session_id)
    return doc is not None and banner.remove(doc, key)


notices.board().display = panel_notices.BannerDisplay(show_banner, remove_banner)


def kill_message(reason: str | None) -> str:
    return f"This session was ended by an administrator: {reason}" if reason else DEFAULT_KILL_MESSAGE


class Tracked(Protocol):
    """What this module uses of a tracker (``SessionClient``), which it never imports: the tracker imports it."""

    session_id: str
    app_name: str
    idle_timeout_s: float | None
    max_session_age_s: float | None

    @property
    def ended(self) -> bool: ...
    @property
    def is_exempt(self) -> bool: ...
    def refusal(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def last_interaction_at(self) -> datetime | None: ...
    def activate(self) -> None: ...
    def finish(self, reason: str, *, run: bool = True) -> None: ...
    def request_kill(self, reason: str | None) -> None: ...
    def take_callbacks(self) -> list[Callable[[], Any]]: ...
    def report_browser(self, visibility: str | None, interacted: bool) -> None: ...
    def report_disconnected(self, disconnected: bool) -> None: ...


class PanelBinding:
    """Ties a tracker to its Panel document: ends and kills go through Panel (the tracker's ``SessionBinding``)."""

    def __init__(self, tracker: Tracked) -> None:
        self._tracker = weakref.ref(tracker)
        self.session_id = tracker.session_id

    @property
    def tracker(self) -> Tracked | None:
        return self._tracker()

    def start(self) -> None:
        """Refuse a killed or expired id that reconnects (``reconnect=True``), else follow the session's websockets."""
        sid, tracker = self.session_id, self._tracker()
        agent = current_agent()
        if tracker is not None and agent is not None and agent.was_killed(sid):
            tracker.request_kill("this session was killed; reconnecting is refused")
        elif sid in _refused:
            _schedule_end(sid, *_refused[sid])
        else:
            liveness_config()  # a bad setting fails here, in the app, not later on the IOLoop
            message = tracker.refusal() if tracker is not None else None
            if message is not None:  # made in on_session_created: the app's code will not run (refusal.py)
                refusal.mark(sid, message)
            doc = _docs.get(sid)
            if doc is not None:
                doc.add_next_tick_callback(partial(_start_watch, sid))

    def schedule_kill(self, reason: str | None) -> bool:
        """Queue the kill on the session's IOLoop; ``False`` if the document is gone."""
        return _schedule_end(self.session_id, "killed", kill_message(reason))

    def release(self) -> None:
        with _docs_lock:
            if _bindings.get(self.session_id) is self:
                del _bindings[self.session_id]


def bind(tracker: Tracked) -> PanelBinding | None:
    """Attach ``tracker`` to its session's document (found from the current thread or remembered).

    The tracker then calls :meth:`PanelBinding.start`.
    """
    doc = _docs.get(tracker.session_id)
    if doc is None:
        return None
    doc.on_session_destroyed(_session_destroyed)
    ending.enable_notice()
    _use_usage()
    panel_drain.install(live_session_ids, show_banner, remove_banner, _schedule_end)
    binding = PanelBinding(tracker)
    with _docs_lock:
        _bindings[tracker.session_id] = binding
    return binding


def _tracked(session_id: str) -> Tracked | None:
    """The live tracker bound to this session, if any."""
    with _docs_lock:
        binding = _bindings.get(session_id)
    return None if binding is None else binding.tracker


def liveness_config() -> LivenessConfig:
    """The process's liveness settings, read from the environment once."""
    global _liveness_config
    if _liveness_config is None:
        _liveness_config = resolve_liveness()
    return _liveness_config


def _get_liveness() -> Liveness:
    """The watches of this process, on the IOLoop the sessions run on (created on first use, on that loop)."""
    global _liveness
    if _liveness is None:
        _liveness = Liveness(
            liveness_config(),
            IOLoop.current(),
            end=_end_soon,
            on_disconnect=partial(_set_disconnected, True),
            on_reconnect=partial(_set_disconnected, False),
            cull=_cull,
        )
    return _liveness


def _forget_watch(session_id: str) -> None:
    if _liveness is not None:
        _liveness.forget(session_id)


def _start_watch(session_id: str) -> None:
    """On the IOLoop, once Bokeh made the session: follow its websockets."""
    doc = _docs.get(session_id)
    context = doc.session_context if doc is not None else None
    session = getattr(context, "_session", None)
    tracker = _tracked(session_id)
    if session is None or tracker is None or tracker.ended:
        return
    panel_loop.start()
    panel_restart.arm()
    _get_liveness().watch(session_id, session, partial(_first_connect, session_id))


def _first_connect(session_id: str) -> None:
    """The session's first websocket: the session is real; register it and put the browser component in."""
    tracker = _tracked(session_id)
    if tracker is None:
        return
    message = refusal.pending(session_id) or tracker.refusal()
    if message is not None:
        _refuse(session_id, tracker, message)
        return
    tracker.activate()
    notices.board().session_started(session_id, tracker.app_name)
    panel_drain.session_started(session_id)
    doc = _docs.get(session_id)
    if doc is not None:
        # Added now, not while the page is built: a root missing from a template's HTML breaks its page.
        doc.add_next_tick_callback(partial(_add_browser_component, session_id))


def _refuse(session_id: str, tracker: Tracked, message: str) -> None:
    """Over a limit: the refusal page in place of the app (unless it is already the page), ended as ``refused``.

    Its websocket stays open, so the page reaches the browser whichever process served the HTML
    (``--num-procs``); Panel destroys the session when the tab closes.
    """
    logger.info("session %s refused: %s", session_id, message)
    IOLoop.current().add_callback(_forget_watch, session_id)
    doc = _docs.get(session_id)
    if doc is not None and not refusal.shown(session_id):
        doc.add_next_tick_callback(partial(refusal.show, doc, message))
    refusal.forget(session_id)
    tracker.activate()
    tracker.finish(REFUSED)


def _add_browser_component(session_id: str) -> None:
    doc = _docs.get(session_id)
    if doc is None or doc.session_context is None:
        return
    component = make_component(partial(_browser_report, session_id))
    with set_curdoc(doc):
        model = component.get_root(doc)
    model.name = component.name
    doc.add_root(model)
    banner.prepare(doc)


def _browser_report(session_id: str, visibility: str | None, interacted: bool) -> None:
    tracker = _tracked(session_id)
    if tracker is not None:
        tracker.report_browser(visibility, interacted)


def _set_disconnected(disconnected: bool, session_id: str) -> None:
    tracker = _tracked(session_id)
    if tracker is not None:
        tracker.report_disconnected(disconnected)


def _cull(watch: Watch, now: datetime) -> str | None:
    """Whether the watched session has expired (idle culling, maximum age), with the message to show."""
    tracker = _tracked(watch.session_id)
    if tracker is None:
        return None
    why = culling.expired(tracker, watch, now, liveness_config())
    return None if why is None else f"{EXPIRED_MESSAGE}: {why}."


def _end_soon(session_id: str, reason: str, message: str | None) -> None:
    """Liveness's ``end`` hook: a lost browser or an expired session."""
    _schedule_end(session_id, reason, message)


def _schedule_end(session_id: str, reason: str, message: str | None) -> bool:
    """Queue :func:`_end_on_loop` on the session's IOLoop; ``False`` if the document is gone."""
    doc = _docs.get(session_id)
    if doc is None or doc.session_context is None:
        return False
    if reason in ("expired", "drained") and message:
        _refused[session_id] = (reason, message)
        while len(_refused) > MAX_REMEMBERED_KILLS:
            _refused.popitem(last=False)
    doc.add_next_tick_callback(partial(_end_on_loop, session_id, reason, message))  # type: ignore[arg-type]
    return True


async def _end_on_loop(session_id: str, reason: str, message: str | None) -> None:
    """The one way a session is ended on its own IOLoop, with its document locked: killed, browser lost, expired.

    Every ``on_kill`` callback once (awaited in turn), the tracker ended (``killed`` if a kill was requested,
    whatever ``reason`` says), the notice ``message`` if any, then the websockets closed and the session discarded.
    """
    _forget_watch(session_id)
    notices.board().session_ended(session_id)
    tracker = _tracked(session_id)
    if tracker is not None:
        await await_callbacks(session_id, tracker.take_callbacks())
        tracker.finish(reason, run=False)
    doc = _docs.get(session_id)
    context = doc.session_context if doc is not None else None
    if doc is None or context is None:
        return
    banner.clear_all(doc)
    if message:
        ending.notify(doc, message)
    # Bokeh writes this callback's changes (the notice) only after it returns, still holding the document
    # lock: closing the sockets here would drop them. Close, then discard, from a callback that waits for it.
    IOLoop.current().add_callback(ending.discard, context, session_id, message or "session ended")


def _session_destroyed(session_context: Any) -> None:
    """Panel destroyed the session (tab closed long ago, or our own kill): end it as ``closed``."""
    session_id = str(session_context.id)
    _forget_watch(session_id)
    notices.board().session_ended(session_id)
    refusal.forget(session_id)  # a refused copy that never connected (--num-procs) leaves nothing behind
    with _docs_lock:
        _docs.pop(session_id, None)
    tracker = _tracked(session_id)
    if tracker is not None:
        tracker.finish("closed")
    with _docs_lock:
        _bindings.pop(session_id, None)  # a tracker forgotten without ending (tests) leaves no entry behind
