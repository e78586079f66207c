# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""The Config tab: an app's shared config (keys, values, versions, who changed them when), editing with
compare-and-set, each key's history with a diff between versions, and Revert.

Keys, values and actors are client text: tables use the escaping ``plaintext`` formatter and every HTML pane
gets them through ``safe.escaped``. A value is validated as JSON (and against the 256 KiB limit) before it is
sent; it is saved with ``If-Match`` on the version the editor loaded, so a change made meanwhile by another
process is refused (the outcome says by whom, and the editor reloads) instead of being overwritten.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pandas as pd  # type: ignore[import-untyped]
import panel as pn

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.model import fmt_time, parse_time, text
from session_monitor.dashboard.safe import escaped, notify
from session_monitor.errors import RequestFailed

MAX_VALUE_BYTES = 256 * 1024
KEY_COLUMNS = ("Key", "Value", "Version", "Changed by", "Changed at (UTC)")
HISTORY_COLUMNS = ("Version", "Action", "Changed by", "Changed at (UTC)", "Value")
SHOWN_CHARS = 200
"""A value longer than this is cut in the tables (the editor has it whole)."""


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def cut(value: str) -> str:
    return value if len(value) <= SHOWN_CHARS else value[: SHOWN_CHARS - 1] + "…"


def parse_value(source: str) -> Any:
    """The editor's text as a JSON value; ``ValueError`` saying what is wrong (not JSON, too large)."""
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    size = len(compact(value).encode())
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"{size:,} bytes as compact JSON: over the {MAX_VALUE_BYTES:,} byte limit")
    return value


def diff_text(old: Any, new: Any, old_label: str, new_label: str) -> str:
    """A unified diff of two values, pretty-printed (keys sorted): what changed from ``old`` to ``new``."""
    lines = difflib.unified_diff(
        pretty(old).splitlines(), pretty(new).splitlines(), old_label, new_label, lineterm="", n=3
    )
    return "\n".join(lines) or "(no difference)"


def diff_html(diff: str) -> str:
    rows = []
    for line in diff.splitlines():
        color = "#1a7f37" if line.startswith("+") else "#cf222e" if line.startswith("-") else "inherit"
        rows.append(f"<span style='color:{color}'>{escaped(line)}</span>")
    return "<pre style='margin:4px 0;white-space:pre-wrap;max-height:360px;overflow:auto'>" + "\n".join(rows) + "</pre>"


def key_row(e: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        text(e.get("key")),
        text(cut(compact(e.get("value")))),
        int(e.get("version") or 0),
        text(e.get("updated_by")),
        fmt_time(parse_time(e.get("updated_at"))),
    )


def history_row(v: Mapping[str, Any]) -> tuple[Any, ...]:
    action = str(v.get("action") or "")
    if v.get("reverted_to"):
        action += f" to v{v['reverted_to']}"
    return (
        int(v.get("version") or 0),
        text(action),
        text(v.get("actor")),
        fmt_time(parse_time(v.get("at"))),
        "(deleted)" if v.get("deleted") else text(cut(compact(v.get("value")))),
    )


def _table(columns: tuple[str, ...], page_size: int) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(
        value=pd.DataFrame(columns=list(columns)),
        pagination="local",
        page_size=page_size,
        show_index=False,
        disabled=True,
        selectable=1,
        formatters={c: {"type": "plaintext"} for c in columns},
        header_align="left",
        sizing_mode="stretch_width",
    )


class ConfigView:
    """The Config tab (see the module docstring)."""

    title = "Config"

    def __init__(self, api: ApiClient, *, actor: str) -> None:
        self.api = api
        self.actor = actor
        self.entries: list[dict[str, Any]] = []
        self._rows: list[tuple[Any, ...]] = []
        self._history_key: str | None = None
        self.versions: list[dict[str, Any]] = []
        self.loaded_version = 0
        """The version the editor holds: a save is conditional on it (If-Match)."""
        self.app = pn.widgets.Select(name="App", options=[], width=260)
        self.new_app = pn.widgets.TextInput(name="…or another app", placeholder="app name", width=220)
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.keys = _table(KEY_COLUMNS, 20)
        self.key = pn.widgets.TextInput(name="Key", placeholder="e.g. theme", width=260)
        self.editor = pn.widgets.TextAreaInput(name="Value (JSON)", height=220, sizing_mode="stretch_width")
        self.save = pn.widgets.Button(name="Save", button_type="primary", width=100, align="end")
        self.delete = pn.widgets.Button(name="Delete", button_type="danger", width=100, align="end")
        self.outcome = pn.pane.HTML("", sizing_mode="stretch_width")
        self.history = _table(HISTORY_COLUMNS, 10)
        self.version = pn.widgets.Select(name="Compare version with the current one", options={}, width=300)
        self.diff = pn.pane.HTML("", sizing_mode="stretch_width")
        self.revert = pn.widgets.Button(name="Revert", button_type="warning", disabled=True, align="end")
        self.app.param.watch(self._app_changed, "value")
        self.new_app.param.watch(self._app_typed, "value")
        self.keys.param.watch(self._key_selected, "selection")
        self.version.param.watch(self._version_selected, "value")
        self.save.on_click(self._save)
        self.delete.on_click(self._delete)
        self.revert.on_click(self._revert)

    @property
    def current_app(self) -> str | None:
        return (self.new_app.value or "").strip() or self.app.value or None

    def panel(self) -> pn.viewable.Viewable:
        help_text = (
            "Shared configuration of an app: every process of the app reads it from its own copy and sees a change "
            "within a second. Saving writes a new version only if nobody changed the key since you loaded it."
        )
        editor = pn.Column(
            pn.Row(self.key, self.save, self.delete), self.editor, self.outcome,
            sizing_mode="stretch_width",
        )  # fmt: skip
        history = pn.Column(
            pn.pane.HTML("<b>History</b>"), self.history, pn.Row(self.version, self.revert), self.diff,
            sizing_mode="stretch_width",
        )  # fmt: skip
        return pn.Column(
            pn.pane.HTML(escaped(help_text)),
            pn.Row(self.app, self.new_app),
            self.status,
            self.keys,
            pn.Row(editor, history, sizing_mode="stretch_width"),
            name=self.title,
            sizing_mode="stretch_width",
        )

    # -- loading -----------------------------------------------------------------------------------

    def _path(self, key: str | None = None) -> str:
        app = quote(self.current_app or "", safe="")
        return f"/config/{app}" + (f"/{quote(key, safe='')}" if key else "")

    async def refresh(self) -> None:
        try:
            apps = [a["app"] for a in (await self.api.request("GET", "/config")).data.get("apps", [])]
            if apps != self.app.options:
                self.app.options = apps
                if self.app.value is None and apps:
                    self.app.value = apps[0]
            if self.current_app:
                fetched = await self.api.request("GET", self._path())
                self.entries = list(fetched.data.get("entries") or [])
            else:
                self.entries = []
        except RequestFailed as exc:
            self.status.object = f'<span style="color:#cf222e">{escaped(exc)}</span>'
            return
        shown = f"{len(self.entries)} key(s) in {self.current_app}" if self.current_app else "no config yet"
        self.status.object = escaped(shown)
        rows = [key_row(e) for e in self.entries]
        if rows != self._rows:  # replacing the table's value re-selects its row: only when something changed
            self._rows = rows
            self.keys.value = pd.DataFrame.from_records(rows, columns=list(KEY_COLUMNS))

    async def _app_changed(self, _event: Any) -> None:
        self.new_app.value = ""
        await self.refresh()

    async def _app_typed(self, _event: Any) -> None:
        await self.refresh()

    async def _key_selected(self, event: Any) -> None:
        if not event.new or event.new[0] >= len(self.entries):
            return
        entry = self.entries[event.new[0]]
        if entry["key"] == self.key.value and entry["version"] == self.loaded_version:
            return  # already in the editor (a refresh re-selected it): keep what the operator is doing
        await self.load(str(entry["key"]))

    async def load(self, key: str) -> None:
        """Put ``key``'s current value in the editor and its history beside it."""
        try:
            entry = (await self.api.request("GET", self._path(key))).data
            history = (await self.api.request("GET", self._path(key) + "/history")).data
        except RequestFailed as exc:
            self.outcome.object = f'<span style="color:#cf222e">{escaped(exc)}</span>'
            return
        self.key.value = key
        self.editor.value = pretty(entry.get("value"))
        self.loaded_version = int(entry.get("version") or 0)
        self.versions = list(history.get("versions") or [])
        self.history.value = pd.DataFrame.from_records(
            [history_row(v) for v in self.versions], columns=list(HISTORY_COLUMNS)
        )
        kept = self.version.value if key == self._history_key else None  # a reload keeps the operator's pick
        self._history_key = key
        options = {f"v{v['version']} ({v.get('action')}, {text(v.get('actor'))})": int(v["version"])
                   for v in self.versions[1:]}  # fmt: skip
        self.version.options = options
        self.version.value = kept if kept in options.values() else None
        self._version_selected(SimpleNamespace(new=self.version.value))

    def _version_selected(self, event: Any) -> None:
        chosen = next((v for v in self.versions if v["version"] == event.new), None)
        if chosen is None:
            self.revert.disabled, self.revert.name = True, "Revert"
            self.diff.object = ""
            return
        current = self.versions[0]
        diff = diff_text(chosen.get("value"), current.get("value"), f"v{chosen['version']}", f"v{current['version']}")
        self.diff.object = diff_html(diff)
        self.revert.name = f"Revert to v{chosen['version']}"  # also after a reload
        self.revert.disabled = chosen is current

    # -- writes ------------------------------------------------------------------------------------

    def _say(self, message: str, *, error: bool = False) -> None:
        color = "#cf222e" if error else "#1a7f37"
        self.outcome.object = f'<span style="color:{color}">{escaped(message)}</span>'
        notify(escaped(message), error=error)

    async def _write(self, method: str, path: str, what: str, **kwargs: Any) -> None:
        try:
            fetched = await self.api.request(method, path, actor=self.actor, **kwargs)
        except RequestFailed as exc:
            if exc.status_code == 412:
                self._say(f"{what}: the key changed since you loaded it; reloaded, check and try again", error=True)
                await self.load(self.key.value or "")
            else:
                self._say(f"{what}: {exc}", error=True)
            return
        self._say(f"{what}: now version {fetched.data.get('version')}")
        await self.refresh()
        if fetched.data.get("status") != "deleted":
            await self.load(self.key.value or "")

    async def _save(self, _event: Any) -> None:
        key = (self.key.value or "").strip()
        if not key or not self.current_app:
            self._say("give an app and a key", error=True)
            return
        try:
            value = parse_value(self.editor.value or "")
        except ValueError as exc:
            self._say(f"not saved: the value is {exc}", error=True)
            return
        known = any(e["key"] == key for e in self.entries)
        headers = {"If-Match": f'"{self.loaded_version}"'} if known else None
        await self._write("PUT", self._path(key), f"saved {key}", content=compact(value).encode(), headers=headers)

    async def _delete(self, _event: Any) -> None:
        key = (self.key.value or "").strip()
        if key and self.current_app:
            headers = {"If-Match": f'"{self.loaded_version}"'}
            await self._write("DELETE", self._path(key), f"deleted {key}", headers=headers)

    async def _revert(self, _event: Any) -> None:
        if self.version.value is None:
            return
        version = int(self.version.value)
        key = (self.key.value or "").strip()
        await self._write(
            "POST", self._path(key) + "/revert", f"reverted {key} to v{version}", json={"version": version}
        )
