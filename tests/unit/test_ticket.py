"""A batch's ticket: offsets wait for every delivery; an undeliverable reply is not fatal."""

from __future__ import annotations

from kit.context import Ticket


def test_ticket_is_done_only_when_closed_and_all_delivered() -> None:
    t = Ticket()
    t.pending = 2
    t.delivered(None, None)
    t.closed = True
    assert not t.done
    t.delivered(None, None)
    assert t.done and t.error is None


def test_a_failed_event_delivery_is_recorded_but_a_failed_reply_is_only_counted() -> None:
    events, replies = Ticket(), Ticket()
    events.pending = replies.pending = 1
    events.closed = replies.closed = True
    events.delivered("UNKNOWN_TOPIC", None)
    replies.settled("UNKNOWN_TOPIC", None)
    assert events.done and events.error == "UNKNOWN_TOPIC"  # the runtime stops, uncommitted
    assert replies.done and replies.error is None and replies.dropped == 1
