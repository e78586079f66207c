"""The agent's copy of the shared config: versions only move forward, full snapshots are the truth (except our own
newer writes), watchers fire once per version, and the copy on disk is written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from session_monitor.client.config_cache import ConfigCache, Watcher, write_atomically


def _cache(tmp_path: Path) -> ConfigCache:
    cache = ConfigCache("http://monitor:8000", tmp_path)
    cache.follow("app")
    return cache


def _answer(cache: ConfigCache, changes: list[dict[str, Any]], *, cursor: int, full: bool, sync: bool = True) -> bool:
    request, sent = cache.sync_request()
    assert request is not None
    data = {"config": changes, "config_cursor": cursor, "config_full": full, "config_epoch": cache.epoch}
    return cache.received(data, sent, sync=sync)


def change(key: str, value: Any, version: int, revision: int, deleted: bool = False) -> dict[str, Any]:
    return {"app": "app", "key": key, "value": value, "version": version, "deleted": deleted, "revision": revision}


def test_versions_only_move_forward_and_each_fires_once(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    fired: list[tuple[Any, int]] = []

    def run_now(fn: Any) -> bool:
        fn()
        return True

    cache.add_watcher("app", "k", Watcher(lambda v, n: fired.append((v, n)), run_now))
    assert cache.pending
    assert _answer(cache, [change("k", 1, 1, 1)], cursor=1, full=True)  # confirms the follow
    assert not cache.pending
    _answer(cache, [change("k", 2, 2, 2)], cursor=2, full=False, sync=False)
    _answer(cache, [change("k", 2, 2, 2)], cursor=2, full=False, sync=False)  # the same version again: nothing
    _answer(cache, [change("k", 1, 1, 1)], cursor=2, full=False, sync=False)  # an older one: nothing
    _answer(cache, [change("k", None, 3, 3, deleted=True)], cursor=3, full=False, sync=False)
    assert fired == [(1, 1), (2, 2), (None, 3)]
    assert cache.entry("app", "k") is None and cache.cursor == 3


def test_a_full_snapshot_drops_what_is_gone_but_keeps_our_newer_write(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _answer(cache, [change("a", 1, 1, 1), change("b", 1, 1, 2)], cursor=2, full=True)
    cache.wrote("app", "c", "3", 1, 5)  # acknowledged after the snapshot below was read
    _answer(cache, [change("a", 1, 1, 1)], cursor=4, full=True)
    assert cache.keys("app") == ["a", "c"]
    # A recreated database: versions start again, the snapshot wins over what was held.
    _answer(cache, [change("a", "new", 1, 1)], cursor=1, full=True)
    assert cache.entry("app", "a").value == "new"  # type: ignore[union-attr]


def test_an_answer_for_an_older_follow_is_ignored(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _, sent = cache.sync_request()
    cache.follow("other")  # a new epoch while the request was out
    data = {"config": [change("k", 1, 1, 1)], "config_cursor": 1, "config_full": True, "config_epoch": sent.epoch}
    assert not cache.received(data, sent, sync=True)
    assert cache.entry("app", "k") is None and cache.pending


def test_the_copy_on_disk_is_read_back_and_a_torn_one_ignored(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _answer(cache, [change("k", {"x": [1, 2]}, 4, 9)], cursor=9, full=True)
    cache.flush()
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["entries"]["k"] == {"value": {"x": [1, 2]}, "version": 4}
    again = _cache(tmp_path)
    assert again.entry("app", "k").value == {"x": [1, 2]} and not again.loaded  # type: ignore[union-attr]
    files[0].write_text('{"app": "app", "entries": {"k": {"val')  # torn (never by us: we rename whole files)
    assert _cache(tmp_path).entry("app", "k") is None


def test_write_atomically_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_atomically(target, "one")
    write_atomically(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]
