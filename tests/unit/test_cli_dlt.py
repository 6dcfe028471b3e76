"""`kit dlt list | show | redrive` without a broker: options, output and exit codes (the
broker side, kit.dlt's functions, is replaced; tests/integration/test_dlt.py runs it)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import click
import pytest

from kit.cli.dlt import dlt
from kit.dlt import Shown, TopicCounts
from kit.dlt.letters import Where, choose
from kit.dlt.redriving import RedriveResult
from kit.errors import BrokerError
from tests.unit.test_dlt import PARTITIONS, letter

# Any: the keywords kit.dlt's functions are called with, recorded as given


def kit_dlt(*args: str) -> int:
    """Run `kit dlt ARGS...` as kit.cli.main does: the command's code, or click's for usage."""
    try:
        return int(dlt.main(args=list(args), prog_name="kit dlt", standalone_mode=False) or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Replace kit.dlt's broker functions; record how each was called."""
    made: list[tuple[str, dict[str, Any]]] = []
    busy = TopicCounts("orders.dlt", 3)
    busy.add(letter(0, "handler"))
    busy.add(letter(1, "decode"))

    def counts(_settings: object, **kw: Any) -> list[TopicCounts]:
        made.append(("list", kw))
        return [busy]

    def show(_settings: object, topic: str, **kw: Any) -> tuple[list[Shown], int]:
        made.append(("show", {"topic": topic, **kw}))
        if topic == "missing.dlt":
            raise BrokerError("topic 'missing.dlt' does not exist")
        return [Shown(letter(0), {"order_id": "o-1"}, None), Shown(letter(1), None, "bad")], 5

    def redrive(_settings: object, topic: str, **kw: Any) -> RedriveResult:
        made.append(("redrive", {"topic": topic, **kw}))
        plan = choose(topic, [letter(0), letter(1)], kw["where"], kw["to"], PARTITIONS, set())
        if kw["dry_run"]:
            return RedriveResult(plan)
        if topic == "failing.dlt":
            return RedriveResult(plan, Counter({"orders": 1}), [(letter(1), "Broker: too large")])
        return RedriveResult(plan, plan.targets())

    monkeypatch.setattr("kit.dlt.dead_letter_counts", counts)
    monkeypatch.setattr("kit.dlt.show", show)
    monkeypatch.setattr("kit.dlt.redrive", redrive)
    return made


def test_list_prints_the_table_or_json(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["TOPIC", "RECORDS", "DECODE", "HANDLER", "DELIVERY", "NEWEST"]
    assert out[1].split()[:5] == ["orders.dlt", "2", "1", "1", "0"]
    assert kit_dlt("list", "--json", "--timeout", "5") == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["topic"], doc["records"], doc["reasons"]["handler"]) == ("orders.dlt", 2, 1)
    assert calls == [("list", {"timeout": 60.0}), ("list", {"timeout": 5.0})]


def test_show_prints_each_letter_and_how_many_of_how_many(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("show", "orders.dlt", "--limit", "2", "--where", "reason=handler") == 0
    out, err = capsys.readouterr()
    assert out.startswith("orders.dlt[0]@0  failed 2026-03-01T12:00:00.000+00:00  handler: ")
    assert '  value: {"order_id": "o-1"}' in out.splitlines()
    assert "\n\norders.dlt[0]@1 " in out  # a blank line between letters
    assert err == "kit dlt show: 2 of 5 dead letter(s) matching reason=handler in orders.dlt\n"
    (_, kw) = calls[0]
    assert (kw["limit"], str(kw["where"]), kw["timeout"]) == (2, "reason=handler", 60.0)


def test_show_json_is_one_document_per_line(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("show", "orders.dlt", "--json") == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["dlt"]["offset"], d["value"], d["value_error"]) for d in docs] == [
        (0, {"order_id": "o-1"}, None),
        (1, None, "bad"),
    ]


def test_show_of_a_missing_topic_exits_1(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("show", "missing.dlt") == 1
    assert capsys.readouterr().err == (
        "kit dlt show: BrokerError: topic 'missing.dlt' does not exist\n"
    )


def test_redrive_prints_what_went_where(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("redrive", "orders.dlt", "--where", "reason=handler", "--to", "retry") == 0
    assert capsys.readouterr().out.splitlines() == [
        "kit dlt redrive: redrove 2 record(s) from orders.dlt: 2 to retry"
    ]
    (_, kw) = calls[0]
    assert (str(kw["where"]), kw["to"], kw["dry_run"]) == ("reason=handler", "retry", False)


def test_a_dry_run_lists_each_record(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("redrive", "orders.dlt", "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        "kit dlt redrive: would redrive orders.dlt/0/0 (handler, orders[0]@0) to orders[0]",
        "kit dlt redrive: would redrive orders.dlt/0/1 (handler, orders[0]@1) to orders[0]",
        "kit dlt redrive: would redrive 2 record(s) from orders.dlt: 2 to orders",
    ]


def test_a_redrive_that_did_not_deliver_everything_exits_1(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_dlt("redrive", "failing.dlt") == 1
    out, err = capsys.readouterr()
    assert out == "kit dlt redrive: redrove 1 record(s) from failing.dlt: 1 to orders\n"
    assert err.startswith(
        "kit dlt redrive: DeliveryError: 1 failed, 0 unconfirmed and 0 unsent of 2 record(s); "
        "first error: Broker: too large. What was delivered carries its marker: run the "
        "command again"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["redrive", "orders.dlt", "--where", "reason=oops"], "unknown reason oops"),
        (["show", "orders.dlt", "--where", "colour=red"], "unknown key 'colour'"),
        (["redrive", "orders.dlt", "--to", "orders.dlt"], "--to cannot be the dead-letter topic"),
        (["show", "orders.dlt", "--limit", "0"], "--limit"),
        (["list", "--timeout", "0"], "--timeout"),
    ],
)
def test_wrong_usage_exits_2(
    args: list[str],
    says: str,
    calls: list[tuple[str, dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert kit_dlt(*args) == 2
    assert says in capsys.readouterr().err
    assert calls == []


def test_where_is_all_when_not_given(calls: list[tuple[str, dict[str, Any]]]) -> None:
    assert kit_dlt("redrive", "orders.dlt") == 0
    assert calls[0][1]["where"] == Where()


def test_kit_has_the_dlt_group(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    from kit.cli import main

    assert main(["dlt", "--help"]) == 0
    assert "redrive" in capsys.readouterr().out
    assert main(["dlt", "redrive", "orders.dlt", "--dry-run"]) == 0
    assert calls[0][0] == "redrive"
    with pytest.raises(SystemExit) as exited:
        main(["dlt", "show", "orders.dlt", "--where", "reason"])
    assert exited.value.code == 2
