"""End offsets of a topic just created: a partition without a leader yet is asked again.

`kit services` on a fresh broker crashed with NOT_LEADER_FOR_PARTITION from the registry
reader's first end-offset query, made right after it created `_kit_registry`.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from kit.transport.kafka import watermarks


class Leaderless:
    """A consumer whose end-offset query fails `failures` times with `code`, then answers."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0
        self.timeouts: list[float] = []  # what each query was given to wait

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]:
        assert not cached, "the leader must be asked, not librdkafka's cache"
        self.calls += 1
        self.timeouts.append(timeout)
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return 0, 7


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
    ],
)
def test_a_partition_without_a_leader_yet_is_asked_again(code: int) -> None:
    consumer = Leaderless(failures=2, code=code)
    assert watermarks(consumer, TopicPartition("_kit_registry", 0), 5.0) == (0, 7)  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_other_errors_are_raised_at_once() -> None:
    consumer = Leaderless(failures=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException) as raised:
        watermarks(consumer, TopicPartition("t", 0), 5.0)  # type: ignore[arg-type]
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consumer.calls == 1


def test_a_leader_that_never_comes_fails_within_the_timeout() -> None:
    consumer = Leaderless(failures=10**6)
    started = time.monotonic()
    with pytest.raises(KafkaException):
        watermarks(consumer, TopicPartition("t", 0), 0.5)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0
    assert consumer.calls >= 2


def test_a_first_query_that_gets_no_answer_soon_is_asked_again_soon() -> None:
    # A fresh consumer's first query can be lost with its bootstrap connection, and
    # librdkafka asks the leader again only about 700 ms later (seen in `Client()`'s first
    # call, 0.7 s instead of 0.2 s, about one in three). Asked again, it answers at once.
    consumer = Leaderless(failures=1, code=KafkaError._TIMED_OUT)  # after its `timeout`
    assert watermarks(consumer, TopicPartition("_kit_registry", 0), 10.0) == (0, 7)  # type: ignore[arg-type]
    assert consumer.timeouts[0] <= 0.1, consumer.timeouts  # not the whole 10 s at once
    assert consumer.calls == 2


def test_all_brokers_down_for_a_moment_is_asked_again_within_the_timeout() -> None:
    # A cluster whose first bootstrap address is a dead node: a short attempt can fail so
    # before the other addresses are tried (tests/fault/test_cluster.py, one node killed).
    consumer = Leaderless(failures=1, code=KafkaError._ALL_BROKERS_DOWN)
    assert watermarks(consumer, TopicPartition("_kit_registry", 0), 10.0) == (0, 7)  # type: ignore[arg-type]
    assert consumer.calls == 2
