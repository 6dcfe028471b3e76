"""`kit replay` never feeds a recording back into its live topics unless told to (issue 11.3).

No broker: the refusals happen before replay connects (a publisher that connects fails the
test), and the selection of records is checked with a publisher that only counts.
tests/integration/test_record_replay.py has the same on a real broker.
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kit.cli import main
from kit.errors import ConfigError
from kit.replay import Record, RecordingWriter, ReplayResult, replay

replay_module = importlib.import_module("kit.replay.replay")  # kit.replay.replay: a function


def recording(path: Path) -> Path:
    """Three topics: a (4 records), b (2) and c (1)."""
    with RecordingWriter(path, topics={"a": 2, "b": 1, "c": 1}) as writer:
        for n, topic in enumerate(["a", "a", "b", "a", "c", "b", "a"]):
            writer.write(
                Record(topic, n % 2 if topic == "a" else 0, n, 1_000 + n, 1, b"k", (), b"v")
            )
    return path


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if replay gets as far as connecting to a cluster."""

    def connect(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("replay connected to a cluster")

    monkeypatch.setattr(replay_module, "_Publisher", connect)


class Counting:
    """A publisher that publishes nothing and counts what it was given, by target topic."""

    made: list[Counting] = []

    def __init__(
        self, _settings: Any, partitions: Any, targets: Any, _keep: bool, _reframer: Any = None
    ) -> None:
        self.partitions = dict(partitions)
        self.targets = dict(targets)
        self.counts: Counter[str] = Counter()
        self.delivered = 0
        Counting.made.append(self)

    def send(self, rec: Record) -> None:
        self.counts[self.targets[rec.topic]] += 1
        self.delivered += 1

    def finish(self) -> int:
        return 0

    def confirm(self, _sent: int) -> None:
        pass

    def result(self, path: Path | str, seconds: float, *, interrupted: bool) -> ReplayResult:
        return ReplayResult(
            str(path), self.delivered, seconds, self.targets, counts=dict(self.counts)
        )


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[Counting]:
    Counting.made = []
    monkeypatch.setattr(replay_module, "_Publisher", Counting)
    return Counting.made


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`kit replay ARGV...`: the exit code and what it printed (stdout and stderr)."""
    try:
        code = main(["replay", *argv])
    except SystemExit as exited:  # click's usage errors
        code = int(exited.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_partial_topic_map_is_refused_before_connecting(
    tmp_path: Path, no_broker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recording(tmp_path / "live.kitrec")
    code, out = run(capsys, str(path), "--into", "127.0.0.1:1", "--topic-map", "a=a.copy", "-q")
    assert code == 2, out
    assert out.startswith("kit replay: ") and "b, c" in out  # the unmapped topics, named
    assert "--only" in out and "--into-original-topics" in out


def test_no_topic_map_at_all_is_refused_too(
    tmp_path: Path, no_broker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recording(tmp_path / "live.kitrec")
    code, out = run(capsys, str(path), "--into", "127.0.0.1:1", "-q")
    assert code == 2, out
    assert "a, b, c" in out


def test_only_and_topic_map_must_name_recorded_topics(
    tmp_path: Path, no_broker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recording(tmp_path / "live.kitrec")
    code, out = run(capsys, str(path), "--only", "a", "zz", "--topic-map", "a=x", "-q")
    assert code == 2 and "zz" in out, out
    code, out = run(capsys, str(path), "--only", "a", "--topic-map", "a=x", "b=y", "-q")
    assert code == 2 and "b" in out and "--only" in out, out


def test_choose_targets() -> None:
    from kit.replay.replay import OriginalTopicsRefused, choose_targets

    recorded = {"a": 2, "b": 1, "c": 1}
    assert choose_targets(recorded, {"a": "x"}, only=["a"]) == {"a": "x"}
    assert choose_targets(recorded, {"a": "x", "b": "y", "c": "z"}) == {
        "a": "x",
        "b": "y",
        "c": "z",
    }
    assert choose_targets(recorded, {"a": "x"}, into_original_topics=True) == {
        "a": "x",
        "b": "b",
        "c": "c",
    }
    with pytest.raises(OriginalTopicsRefused) as refused:
        choose_targets(recorded, {"a": "x", "b": "b"})
    assert refused.value.unmapped == ("b", "c")  # a topic mapped to itself is its original
    assert isinstance(refused.value, ConfigError)


def test_only_publishes_the_chosen_topics_and_counts_each_target(
    tmp_path: Path, counting: list[Counting]
) -> None:
    path = recording(tmp_path / "live.kitrec")
    done = replay(path, into="127.0.0.1:1", only=["a", "c"], topic_map={"a": "a.copy", "c": "c2"})
    (publisher,) = counting
    assert publisher.targets == {"a": "a.copy", "c": "c2"}
    assert publisher.partitions == {"a": 2, "c": 1}  # only these topics are created
    assert done.counts == {"a.copy": 4, "c2": 1} and done.published == 5
    assert done.skipped == 2  # the records of b


def test_into_original_topics_is_explicit(tmp_path: Path, counting: list[Counting]) -> None:
    path = recording(tmp_path / "live.kitrec")
    done = replay(path, into="127.0.0.1:1", topic_map={"a": "a.copy"}, into_original_topics=True)
    assert done.counts == {"a.copy": 4, "b": 2, "c": 1}


def test_the_summary_names_every_target_and_its_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake(path: str, **kwargs: Any) -> ReplayResult:
        assert kwargs["only"] == ["a", "b"] and kwargs["into_original_topics"] is True
        return ReplayResult(
            path,
            7,
            1.0,
            {"a": "a.copy", "b": "b"},
            created=("a.copy",),
            counts={"a.copy": 5, "b": 2},
            skipped=3,
        )

    monkeypatch.setattr(replay_module, "replay", fake)
    argv = ["f.kitrec", "--only", "a", "b", "--topic-map", "a=a.copy", "--into-original-topics"]
    code, out = run(capsys, *argv, "-q")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("kit replay: 7 record(s) published from f.kitrec")
    assert "kit replay:   a.copy: 5 (from a; created)" in lines
    assert "kit replay:   b: 2 (from b, its original topic)" in lines
    assert any("3 record(s) of other topics not replayed" in line for line in lines)
