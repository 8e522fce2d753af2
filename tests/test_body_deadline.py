"""The body deadline (app/body_deadline.py) on its own: one timer per request ends a read
waiting past the deadline, which moves later as bytes arrive. tests/test_slow_bodies.py
checks the same against a real server with trickling clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from starlette.types import Message

from app.body_deadline import BodyDeadline
from app.errors import RequestTimeout

TIMEOUT = 0.2


def pieces(sizes: list[int], gap: float, last: bool = True) -> Callable[[], Awaitable[Message]]:
    """A receive yielding a piece of each size, ``gap`` seconds apart, then (unless
    ``last`` is false) nothing more for ever."""
    queue = list(sizes)

    async def receive() -> Message:
        await asyncio.sleep(gap)
        if not queue:
            await asyncio.Event().wait()  # a stalled client
        size = queue.pop(0)
        return {"type": "http.request", "body": b"x" * size, "more_body": bool(queue) or not last}

    return receive


async def drain(deadline: BodyDeadline) -> int:
    while True:
        message = await deadline.receive()
        if not message.get("more_body", False):
            return deadline.received


async def ended(read: Awaitable[object]) -> asyncio.Task[object]:
    """The task of ``read`` once it has ended by itself; it fails the test if it has not
    within 5 s (it is not cancelled first: a cancellation would end it differently)."""
    task = asyncio.ensure_future(read)
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:
        task.cancel()
        pytest.fail("the read is still waiting")
    return task


def test_a_stalled_body_ends_in_a_timeout() -> None:
    deadline = BodyDeadline(pieces([10], 0.01, last=False), TIMEOUT, min_rate=1000)

    async def run() -> None:
        with pytest.raises(RequestTimeout, match="request body too slow: 10 bytes"):
            (await ended(drain(deadline))).result()

    asyncio.run(run())


def test_a_body_arriving_fast_enough_may_take_longer_than_the_timeout() -> None:
    """Each piece of 100 bytes buys 0.1 s at 1,000 bytes/s; 10 pieces 0.05 s apart take
    0.5 s in all, more than the 0.2 s timeout."""
    deadline = BodyDeadline(pieces([100] * 10, 0.05), TIMEOUT, min_rate=1000)

    async def run() -> object:
        return (await ended(drain(deadline))).result()

    assert asyncio.run(run()) == 1000


def test_a_trickle_below_the_rate_is_cut_off() -> None:
    deadline = BodyDeadline(pieces([1] * 100, 0.05), TIMEOUT, min_rate=1000)

    async def run() -> None:
        with pytest.raises(RequestTimeout):
            (await ended(drain(deadline))).result()

    asyncio.run(run())


def test_a_read_after_the_deadline_passed_fails_at_once() -> None:
    """The deadline passed while the handler worked (no read waiting): the next read."""
    deadline = BodyDeadline(pieces([10, 10], 0.0), TIMEOUT, min_rate=1000)

    async def run() -> None:
        await deadline.receive()
        await asyncio.sleep(TIMEOUT * 1.5)
        with pytest.raises(RequestTimeout):
            (await ended(deadline.receive())).result()

    asyncio.run(run())


def test_once_the_body_is_complete_reads_have_no_deadline() -> None:
    """A wait for the client's disconnect after the whole body came is not a slow body."""
    replies: list[Message] = [
        {"type": "http.request", "body": b"xx", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        if len(replies) == 1:
            await asyncio.sleep(TIMEOUT * 2)
        return replies.pop(0)

    deadline = BodyDeadline(receive, TIMEOUT, min_rate=1000)

    async def run() -> None:
        assert (await deadline.receive())["body"] == b"xx"
        message = (await ended(deadline.receive())).result()
        assert isinstance(message, dict) and message["type"] == "http.disconnect"

    asyncio.run(run())
