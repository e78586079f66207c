"""The pause after a lost compare-and-set stays bounded however many times a writer has lost."""

from __future__ import annotations

from session_monitor.client.shared import _backoff_s


def test_the_pause_grows_with_the_losses_but_stays_under_50_ms() -> None:
    first = [_backoff_s(0) for _ in range(200)]
    assert all(0 <= p <= 0.004 for p in first)
    # A writer that lost 1,100 times in a row (seen on a loaded CI machine) used to overflow 2**attempt as a float.
    for attempt in (5, 64, 1_023, 1_100, 999_999):
        pauses = [_backoff_s(attempt) for _ in range(200)]
        assert all(0 <= p < 0.05 for p in pauses)
        assert max(pauses) > 0.004  # later pauses reach past the first one's bound
