"""The dashboard's tabs: the first built at once, each other one when first opened, then kept."""

from __future__ import annotations

from typing import Any

import panel as pn

from session_monitor.dashboard.tabs import PENDING_CLASS, LazyTabs


def test_a_tab_is_built_when_first_opened_and_kept() -> None:
    contents = [pn.pane.Markdown(f"content {i}") for i in range(3)]
    lazy = LazyTabs([(f"Tab {i}", c) for i, c in enumerate(contents)])
    holders = list(lazy.tabs.objects)
    assert lazy.tabs._names == ["Tab 0", "Tab 1", "Tab 2"]
    assert holders[0].objects == [contents[0]]
    for holder in holders[1:]:
        (placeholder,) = holder.objects
        assert isinstance(placeholder, pn.Spacer) and PENDING_CLASS in placeholder.css_classes
    assert lazy.built == {0}

    lazy.tabs.active = 2
    assert holders[2].objects == [contents[2]]
    assert lazy.built == {0, 2}
    assert PENDING_CLASS in holders[1].objects[0].css_classes  # not opened: still not built

    lazy.tabs.active = 0
    lazy.tabs.active = 2  # back and forth: the same content, not a new copy
    assert holders[2].objects == [contents[2]]
    assert lazy.built == {0, 2}


def test_a_built_tab_renders_its_content_and_a_pending_one_only_its_placeholder() -> None:
    lazy = LazyTabs([("One", pn.pane.Markdown("first")), ("Two", pn.pane.Markdown("second"))])
    model: Any = lazy.tabs.get_root()
    first, second = (panel.child for panel in model.tabs)
    assert ["first" in c.text for c in first.children] == [True]
    assert [c.css_classes for c in second.children] == [[PENDING_CLASS]]
    lazy.tabs.active = 1  # the page's model is updated in place: the tab's column now holds its content
    assert ["second" in c.text for c in model.tabs[1].child.children] == [True]
