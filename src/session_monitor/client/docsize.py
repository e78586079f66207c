"""How big a session's document is: its Bokeh models, and the bytes of data they and its Panel objects hold.

Measured off the loop, on the agent's sizing thread, at most once per sync interval and within a time
budget per pass (:data:`PASS_BUDGET_S`): sessions not reached in a pass keep their last figures and
come first in the next. Nothing is locked and nothing is changed: the pass copies the document's model
table and each data dict in one C-level step (``list(d.values())`` runs without releasing the GIL, so
the loop cannot change the dict half-way), then reads only sizes (``ndarray.nbytes``, a DataFrame's
blocks). A model added or removed meanwhile is simply counted next time; an error in one object skips it.

What counts as data: the columns of every ``ColumnDataSource`` (numpy arrays, lists), and the numpy
arrays, DataFrames and Series held in the parameters of the Panel objects rendered in the document
(a ``Tabulator``'s ``value``, a ``DataFrame`` pane's ``object``). Arrays are counted once per buffer:
a column that is a view of a DataFrame's block (what ``ColumnDataSource.from_df`` makes) is not
counted twice. Object columns (strings) are sized from a sample of :data:`SAMPLE` values, extrapolated;
``memory_usage(deep=True)`` would visit every string and can take seconds on a large frame.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from bokeh.document import Document
from bokeh.models import ColumnDataSource

PASS_BUDGET_S = 0.05
"""Most time one sizing pass spends, over every session of the process."""

SAMPLE = 200
"""Values of an object column (or list) sized to estimate the whole."""

MAX_MODELS = 100_000
"""Models visited per document at most (beyond this the figure is a lower bound)."""


@dataclass(frozen=True, slots=True)
class DocSize:
    models: int
    data_bytes: int


def _sample_bytes(values: Any, count: int) -> int:
    """Estimated bytes of the Python objects in ``values`` (a sequence of ``count`` items), from a sample."""
    if count == 0:
        return 0
    step = max(1, count // SAMPLE)
    sample = [values[i] for i in range(0, count, step)][:SAMPLE]
    return int(sum(sys.getsizeof(v) for v in sample) / len(sample) * count)


class _Counter:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.total = 0

    def add(self, value: Any) -> None:
        if id(value) in self.seen:
            return
        self.seen.add(id(value))
        module = type(value).__module__
        if module == "numpy":
            self._array(value)
        elif module.startswith("pandas"):
            self._pandas(value)
        elif isinstance(value, list | tuple):
            self.total += sys.getsizeof(value) + _sample_bytes(value, len(value))
        elif isinstance(value, str | bytes):
            self.total += sys.getsizeof(value)

    def _array(self, arr: Any) -> None:
        root = arr
        while getattr(root, "base", None) is not None and type(root.base).__module__ == "numpy":
            root = root.base
        if root is not arr:
            if id(root) in self.seen:
                return
            self.seen.add(id(root))
        nbytes = int(getattr(root, "nbytes", 0))
        self.total += nbytes
        if getattr(getattr(root, "dtype", None), "kind", "") == "O":
            flat = root.ravel()
            self.total += _sample_bytes(flat, len(flat))

    def _pandas(self, value: Any) -> None:
        kind = type(value).__name__
        if kind == "DataFrame":
            for block in value._mgr.blocks:
                self._block(block.values)
            self.add(value.index)
        elif kind == "Series":
            self._block(value._mgr.blocks[0].values if hasattr(value._mgr, "blocks") else value.array)
            self.add(value.index)
        elif kind.endswith("Index") and kind != "RangeIndex":
            self._block(value._data)

    def _block(self, values: Any) -> None:
        if id(values) in self.seen:
            return
        if type(values).__module__ == "numpy":
            self.seen.add(id(values))
            self._array(values)
        else:  # an extension array: python strings keep an object ndarray; others know their size (pyarrow, ints)
            self.seen.add(id(values))
            backing = getattr(values, "_ndarray", None)
            if type(backing).__module__ == "numpy":
                self._array(backing)
            else:
                self.total += int(getattr(values, "nbytes", 0))


def _panel_objects(doc: Document) -> list[Any]:
    """The Panel objects rendered in ``doc`` (roots and their children)."""
    try:
        from panel.io.state import state
    except ImportError:
        return []
    found: list[Any] = []
    for viewable, _model, view_doc, _comm in list(state._views.values()):
        if view_doc is not doc:
            continue
        try:
            found.extend(viewable.select())  # type: ignore[attr-defined]
        except Exception:
            found.append(viewable)
    return found


def size_document(doc: Document) -> DocSize:
    """Models and data bytes of ``doc`` (see the module docstring)."""
    models = list(doc.models._models.values())
    counter = _Counter()
    for model in models[:MAX_MODELS]:
        if isinstance(model, ColumnDataSource):
            try:
                for column in list(model.data.values()):
                    counter.add(column)
            except Exception:
                continue
    for obj in _panel_objects(doc):
        try:
            values = list(obj.param.values().values())
        except Exception:
            continue
        for value in values:
            if type(value).__module__.split(".")[0] in ("numpy", "pandas"):
                try:
                    counter.add(value)
                except Exception:
                    continue
    return DocSize(len(models), counter.total)


class Sizer:
    """Sizes the documents of a process's sessions, a time budget per pass, resuming where the last stopped."""

    def __init__(self, budget_s: float = PASS_BUDGET_S) -> None:
        self.budget_s = budget_s
        self.sizes: dict[str, DocSize] = {}
        self._order: list[str] = []

    def measure(self, docs: dict[str, Document]) -> dict[str, DocSize]:
        """Size what fits in the budget (at least one document), oldest measured first; every known size."""
        for sid in list(self.sizes):
            if sid not in docs:
                del self.sizes[sid]
        pending = [sid for sid in docs if sid not in self.sizes] + [sid for sid in self._order if sid in docs]
        deadline = time.perf_counter() + self.budget_s
        done: list[str] = []
        for sid in dict.fromkeys(pending):
            if done and time.perf_counter() > deadline:
                break
            try:
                self.sizes[sid] = size_document(docs[sid])
            except Exception:
                continue
            finally:
                done.append(sid)
        self._order = [sid for sid in self._order if sid not in done and sid in docs] + done
        return dict(self.sizes)
