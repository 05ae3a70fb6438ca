"""How long a participant's media waits before it is reset again (no clock: times are given)."""

from __future__ import annotations

import itertools

import pytest

from veche.media.backoff import ResetBackoff


def _resets(backoff: ResetBackoff, failures: list[float]) -> list[float]:
    """When the failures at the given times are reset: each once its wait has passed; failures
    while a reset waits add nothing."""
    done: list[float] = []
    due: float | None = None
    for at in failures:
        if due is not None and at < due:
            continue
        if due is not None:
            done.append(due)
            backoff.reset_at(due)
        due = at + backoff.wait(at)
    if due is not None:
        done.append(due)
        backoff.reset_at(due)
    return done


def test_backoff_first_reset_at_once_then_doubling_waits() -> None:
    """Failures every 0.1 s are reset at once, then 1, 2, 4, 8, 16 s after the previous reset,
    and never more than 30 s apart."""
    resets = _resets(ResetBackoff(), [n / 10 for n in range(2000)])
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(resets)]
    assert resets[0] == 0.0
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert max(gaps) == 30.0


def test_backoff_starts_again_after_a_stable_minute() -> None:
    """Media that stays up for a minute after a reset is reset at once at its next failure."""
    backoff = ResetBackoff()
    for at in (0.0, 1.0, 3.0):
        assert backoff.wait(at) == 0.0
        backoff.reset_at(at)
    assert backoff.wait(3.5) == 3.5  # 4 s after the third reset
    assert backoff.wait(63.0) == 0.0
    assert backoff.reset_at(63.0) == 1
    assert backoff.wait(63.2) == pytest.approx(0.8)
