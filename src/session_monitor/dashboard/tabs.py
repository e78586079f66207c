# mypy: disable-error-code="no-untyped-call"
"""The dashboard's tabs, each built when first opened and then kept.

Opening the page then costs the first tab's Bokeh models only, not all nine tabs' (about 20 tables and two
timelines: ~4 s of the dashboard's CPU per page on a 2-core machine). Panel's own ``Tabs(dynamic=True)`` does
build lazily, but it swaps a hidden tab for a new placeholder on every switch, and the browser's Bokeh document
keeps each one it was sent (~5 models a click, for as long as the page is open): here a tab's placeholder is
replaced once, by its content, and a switch only moves ``active``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import panel as pn

PENDING_CLASS = "sm-tab-pending"
"""The CSS class of a tab's placeholder, until the tab is first opened (the e2e tests wait for it to go)."""


class LazyTabs:
    """``pn.Tabs`` over ``(title, content)`` pairs; the first tab is built at once, the others when first opened."""

    def __init__(self, shown: Sequence[tuple[str, Any]], **params: Any) -> None:
        self._contents = [content for _, content in shown]
        self._holders = [
            pn.Column(content if i == 0 else _placeholder(), sizing_mode="stretch_width")
            for i, content in enumerate(self._contents)
        ]
        self._built = {0}
        titles = [title for title, _ in shown]
        self.tabs = pn.Tabs(*zip(titles, self._holders, strict=True), **params)
        self.tabs.param.watch(self._opened, "active")

    @property
    def built(self) -> frozenset[int]:
        """The tabs whose content has been built."""
        return frozenset(self._built)

    def _opened(self, event: Any) -> None:
        index = event.new
        if index in self._built or not 0 <= index < len(self._holders):
            return
        self._built.add(index)
        self._holders[index].objects = [self._contents[index]]


def _placeholder() -> pn.Spacer:
    return pn.Spacer(height=0, css_classes=[PENDING_CLASS])
