"""The one retry loop of store reads: bounded attempts with backoff, within a total deadline (a unit test on a
simulated clock: what a real endpoint that accepts connections and never answers costs, 30 s per attempt)."""

from __future__ import annotations

import pytest

from refmount.errors import StoreError, StoreUnavailable
from refmount.stores import base
from refmount.stores.base import DEADLINE_S, MAX_ATTEMPTS, READ_TIMEOUT_S, RetryPolicy, with_retries


class Stalled(Exception):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.attempts = 0

    def stalled_read(self) -> bytes:
        self.attempts += 1
        self.now += READ_TIMEOUT_S  # the attempt's read timeout runs out
        raise Stalled("read timed out")

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    simulated = Clock()
    monkeypatch.setattr(base.time, "monotonic", lambda: simulated.now)
    monkeypatch.setattr(base.time, "sleep", simulated.sleep)
    return simulated


def test_a_stalled_endpoint_costs_the_deadline_not_every_attempt(clock: Clock) -> None:
    with pytest.raises(StoreError, match=r"giving up after 2 attempts in 60\.2 s: read timed out"):
        with_retries(clock.stalled_read, what="reading x", retryable=lambda e: isinstance(e, Stalled))
    assert clock.attempts == 2 < MAX_ATTEMPTS  # without the deadline: 4 attempts, 121.4 s
    assert clock.now == pytest.approx(2 * READ_TIMEOUT_S + 0.2) and clock.now < DEADLINE_S + READ_TIMEOUT_S


def test_quick_failures_use_every_attempt_and_success_ends_the_loop(clock: Clock) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < MAX_ATTEMPTS:
            raise Stalled("reset")
        return "bytes"

    assert with_retries(flaky, what="reading x", retryable=lambda e: isinstance(e, Stalled)) == "bytes"
    assert len(calls) == MAX_ATTEMPTS and clock.now == pytest.approx(0.2 + 0.4 + 0.8)
    calls.clear()
    with pytest.raises(StoreError, match=r"giving up after 2 attempts in 0\.2 s: reset"):
        with_retries(flaky, what="reading x", retryable=lambda e: isinstance(e, Stalled), attempts=2)
    with pytest.raises(ValueError):  # not retryable: raised as it is, at once
        with_retries(lambda: int("x"), what="reading x", retryable=lambda e: isinstance(e, Stalled))


def test_a_refmount_error_given_up_on_keeps_its_type_and_says_so(clock: Clock) -> None:
    """An unreachable endpoint stays StoreUnavailable (download and verify stop at the first), one line."""

    def unreachable() -> bytes:
        clock.now += 1.0
        raise StoreUnavailable("s3://b/k: cannot reach the S3 endpoint http://127.0.0.1:9")

    policy = RetryPolicy(attempts=3, base_delay=0.5, deadline=60.0)
    with pytest.raises(StoreUnavailable) as info:
        policy.run(unreachable, what="reading s3://b/k", retryable=lambda e: isinstance(e, StoreUnavailable))
    assert str(info.value) == ("s3://b/k: cannot reach the S3 endpoint http://127.0.0.1:9 "
                               "(giving up after 3 attempts in 4.5 s)")  # fmt: skip
