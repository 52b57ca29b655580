"""The confirm tracker: every order in which a broker may settle messages, without a broker."""

from __future__ import annotations

import itertools

import pytest

from tstat_transport.transports import Message
from tstat_transport.transports.confirms import ConfirmTracker


def message(i: int) -> Message:
    return Message(body=b"[]", count=0, message_id=f"s:0:d:log_tcp_complete:{i}", timestamp=0)


def ids(messages) -> list[str]:
    return [m.message_id.rsplit(":", 1)[1] for m in messages]


def tracker_with(n: int) -> tuple[ConfirmTracker, list[Message]]:
    tracker = ConfirmTracker()
    messages = [message(i) for i in range(1, n + 1)]
    assert [tracker.published(m) for m in messages] == list(range(1, n + 1))
    return tracker, messages


def test_single_acks_in_any_order_confirm_exactly_those() -> None:
    tracker, _ = tracker_with(4)
    assert ids(tracker.settle(3, multiple=False, ack=True).confirmed) == ["3"]
    assert ids(tracker.settle(1, multiple=False, ack=True).confirmed) == ["1"]
    assert len(tracker) == 2
    assert ids(tracker.take_unconfirmed()) == ["2", "4"]


def test_multiple_ack_confirms_every_tag_up_to_it_in_order() -> None:
    tracker, _ = tracker_with(6)
    tracker.settle(2, multiple=False, ack=True)
    settled = tracker.settle(4, multiple=True, ack=True)
    assert ids(settled.confirmed) == ["1", "3", "4"]
    assert settled.nacked == [] and settled.returned == []
    assert ids(tracker.take_unconfirmed()) == ["5", "6"]


def test_multiple_nack_refuses_every_tag_up_to_it() -> None:
    tracker, _ = tracker_with(5)
    settled = tracker.settle(3, multiple=True, ack=False)
    assert ids(settled.nacked) == ["1", "2", "3"] and settled.confirmed == []
    assert ids(tracker.settle(5, multiple=True, ack=True).confirmed) == ["4", "5"]
    assert len(tracker) == 0


def test_ack_and_nack_interleaved_settle_each_message_once() -> None:
    tracker, _ = tracker_with(5)
    assert ids(tracker.settle(2, multiple=False, ack=False).nacked) == ["2"]
    assert ids(tracker.settle(3, multiple=True, ack=True).confirmed) == ["1", "3"]
    # A repeated or unknown tag settles nothing (never a message twice).
    assert tracker.settle(3, multiple=False, ack=True).confirmed == []
    assert tracker.settle(99, multiple=False, ack=False).nacked == []
    assert ids(tracker.settle(99, multiple=True, ack=True).confirmed) == ["4", "5"]


def test_return_before_its_ack_makes_it_returned_not_confirmed() -> None:
    tracker, messages = tracker_with(3)
    assert tracker.returned(messages[1].message_id, "312 NO_ROUTE")
    settled = tracker.settle(3, multiple=True, ack=True)
    assert ids(settled.confirmed) == ["1", "3"]
    assert [(ids([m])[0], why) for m, why in settled.returned] == [("2", "312 NO_ROUTE")]


def test_return_goes_to_the_oldest_unreturned_message_with_that_id() -> None:
    # The same id twice in flight (a message published again after a nack).
    tracker = ConfirmTracker()
    twin = message(7)
    tracker.published(twin)
    tracker.published(twin)
    assert tracker.returned(twin.message_id, "first")
    assert tracker.returned(twin.message_id, "second")
    assert not tracker.returned(twin.message_id, "third")  # no third copy in flight
    settled = tracker.settle(2, multiple=True, ack=True)
    assert [why for _, why in settled.returned] == ["first", "second"]


def test_return_of_an_unknown_message_is_reported() -> None:
    tracker, _ = tracker_with(1)
    assert not tracker.returned("not-ours", "312 NO_ROUTE")
    assert not tracker.returned(None, "312 NO_ROUTE")


def test_returned_and_nacked_counts_as_returned() -> None:
    tracker, messages = tracker_with(1)
    tracker.returned(messages[0].message_id, "312 NO_ROUTE")
    settled = tracker.settle(1, multiple=False, ack=False)
    assert settled.nacked == [] and len(settled.returned) == 1


def test_take_unconfirmed_gives_publish_order_and_restarts_tags() -> None:
    tracker, messages = tracker_with(4)
    tracker.returned(messages[3].message_id, "312 NO_ROUTE")
    tracker.settle(2, multiple=False, ack=True)
    assert ids(tracker.take_unconfirmed()) == ["1", "3", "4"]
    assert len(tracker) == 0
    # A new channel numbers from 1 again, and the old return mark is gone.
    assert tracker.published(messages[3]) == 1
    assert ids(tracker.settle(1, multiple=False, ack=True).confirmed) == ["4"]


@pytest.mark.parametrize("seed", range(20))
def test_any_settling_sequence_accounts_for_every_message_once(seed: int) -> None:
    import random

    rng = random.Random(seed)
    n = 30
    tracker, messages = tracker_with(n)
    for m in rng.sample(messages, 5):
        tracker.returned(m.message_id, "312 NO_ROUTE")
    seen: list[Message] = []
    for _ in range(40):
        settled = tracker.settle(rng.randint(1, n), rng.random() < 0.5, rng.random() < 0.8)
        seen += settled.confirmed + settled.nacked + [m for m, _ in settled.returned]
    seen += tracker.take_unconfirmed()
    assert sorted(ids(seen), key=int) == [str(i) for i in range(1, n + 1)]


def test_every_multiple_boundary_on_small_windows() -> None:
    for n, upto in itertools.product(range(1, 5), range(0, 6)):
        tracker, _ = tracker_with(n)
        confirmed = tracker.settle(upto, multiple=True, ack=True).confirmed
        assert ids(confirmed) == [str(i) for i in range(1, min(upto, n) + 1)]
        assert len(tracker) == n - len(confirmed)
