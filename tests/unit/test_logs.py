"""KIT_LOG_FORMAT=json: one JSON object per line, with the context where it applies (issue 14,
point 4). No broker, but for librdkafka's line, which comes from a closed port."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kit import ConfigError, Settings
from kit.cli.errors import exit_code
from kit.config import known_variables
from kit.logs import JsonFormatter
from kit.protocol import CORRELATION_ID, Headers
from kit.telemetry import current_instance, current_record
from kit.transport.kafka import LIBRDKAFKA_LOG, make_producer
from tests.unit.no_broker import closed_port, run_kit, run_python

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


class FakeRecord:
    """The part of a consumed record the formatter reads."""

    def __init__(self, headers: Headers | None) -> None:
        self._headers = headers

    def topic(self) -> str:
        return "shop.OrderPlaced"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return None

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.unit.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def objects(out: io.StringIO) -> list[dict[str, Any]]:
    """Each line of `out`, parsed: json.loads fails the test on a line that is not JSON."""
    lines = out.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed), lines
    return parsed


@contextmanager
def in_handler(headers: Headers | None) -> Iterator[None]:
    """What the runtime sets while a handler runs: its instance and the record in hand."""
    instance = current_instance.set(("billing", "billing-abc123"))
    record = current_record.set(FakeRecord(headers))
    try:
        yield
    finally:
        current_record.reset(record)
        current_instance.reset(instance)


CONTEXT_KEYS = {"service", "instance", "topic", "partition", "offset", "correlation_id"}
TRACE_KEYS = {"trace_id", "span_id"}


def test_a_line_outside_any_handler_has_the_core_fields_only(json_log: Any) -> None:
    logger, out = json_log
    logger.info("hello %s", "world")
    [line] = objects(out)
    assert set(line) == {"time", "level", "logger", "message"}
    assert line["level"] == "INFO"
    assert line["logger"] == "tests.unit.test_logs"
    assert line["message"] == "hello world"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
    stamp = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert abs(stamp.timestamp() - time.time()) < 60  # UTC, not local time


def test_inside_a_handler_a_line_names_the_service_record_correlation_and_trace(
    json_log: Any,
) -> None:
    logger, out = json_log
    headers = [
        (CORRELATION_ID, b"corr-7"),
        ("traceparent", f"00-{TRACE}-{SPAN}-01".encode()),
    ]
    with in_handler(headers):
        logger.warning("invoiced")
    logger.warning("after")
    inside, after = objects(out)
    assert inside["service"] == "billing"
    assert inside["instance"] == "billing-abc123"
    assert (inside["topic"], inside["partition"], inside["offset"]) == ("shop.OrderPlaced", 3, 42)
    assert inside["correlation_id"] == "corr-7"
    assert (inside["trace_id"], inside["span_id"]) == (TRACE, SPAN)
    assert not (CONTEXT_KEYS | TRACE_KEYS) & set(after), after


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("traceparent", b"garbage")],
        [("traceparent", f"00-{'0' * 32}-{SPAN}-01".encode())],  # the invalid all-zero id
    ],
)
def test_a_record_without_a_valid_traceparent_or_correlation_id_has_neither(
    json_log: Any, headers: Headers | None
) -> None:
    logger, out = json_log
    with in_handler(headers):
        logger.info("no trace")
    [line] = objects(out)
    assert line["topic"] == "shop.OrderPlaced"
    assert not ({"correlation_id"} | TRACE_KEYS) & set(line), line


def test_a_current_opentelemetry_span_wins_over_the_header(json_log: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    context = SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=False, trace_flags=TraceFlags(1)
    )
    logger, out = json_log
    with (
        in_handler([("traceparent", f"00-{TRACE}-{SPAN}-01".encode())]),
        trace.use_span(NonRecordingSpan(context)),
    ):
        logger.info("in a span")
    [line] = objects(out)
    assert line["trace_id"] == f"{0x1234:032x}"
    assert line["span_id"] == f"{0x5678:016x}"


def test_an_exception_comes_as_its_traceback(json_log: Any) -> None:
    logger, out = json_log
    try:
        raise ValueError("bad quantity")
    except ValueError:
        logger.exception("handler failed")
    [line] = objects(out)
    assert line["level"] == "ERROR"
    assert line["message"] == "handler failed"
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert line["traceback"].rstrip().endswith("ValueError: bad quantity")


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


class Broken:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_extra_fields_are_included_and_any_value_serialises(json_log: Any) -> None:
    logger, out = json_log
    logger.info(
        "extras",
        extra={"order_id": "o-1", "amount": 12, "tags": ["a"], "obj": Opaque(), "bad": Broken()},
    )
    [line] = objects(out)
    assert (line["order_id"], line["amount"], line["tags"]) == ("o-1", 12, ["a"])
    assert line["obj"] == "opaque!"
    assert "Broken object" in line["bad"]


def test_a_record_that_cannot_be_formatted_is_still_one_json_line() -> None:
    # formatted directly: pytest's own handlers raise on such a record
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("not a number",), None)
    [line] = [json.loads(JsonFormatter().format(record))]
    assert line["level"] == "INFO"
    assert line["message"] == "%d items"
    assert "log_error" in line


def test_a_failing_record_in_hand_does_not_stop_the_line(json_log: Any) -> None:
    class Failing(FakeRecord):
        def topic(self) -> str:
            raise RuntimeError("closed")

    logger, out = json_log
    token = current_record.set(Failing(None))
    try:
        logger.info("still logged")
    finally:
        current_record.reset(token)
    [line] = objects(out)
    assert line["message"] == "still logged"
    assert "closed" in line["log_error"]


def test_kit_log_format_is_a_known_setting() -> None:
    assert "KIT_LOG_FORMAT" in known_variables()


def test_a_bad_kit_log_format_exits_2_naming_the_variable(tmp_path: Path) -> None:
    code, lines, _took = run_kit(tmp_path, "services", KIT_LOG_FORMAT="xml")
    assert code == exit_code(ConfigError("KIT_LOG_FORMAT", "bad")) == 2
    assert lines == [
        "kit: configuration error: KIT_LOG_FORMAT: 'xml' is not a log format (text, json)"
    ]


def test_a_bad_log_format_option_is_a_usage_error(tmp_path: Path) -> None:
    code, lines, _took = run_kit(tmp_path, "--log-format", "xml", "services")
    assert code == 2
    assert "Invalid value for '--log-format'" in lines[-1]


PROGRAM = """
import logging, sys
from kit.cli import main
code = main(sys.argv[1:])
logging.getLogger("kit.test").warning("from %s", "kit", extra={"n": 1})
"""


@pytest.mark.parametrize("how", ["env", "option", "default"])
def test_the_kit_command_logs_json_when_asked_and_text_by_default(tmp_path: Path, how: str) -> None:
    script = tmp_path / "logs.py"
    script.write_text(PROGRAM)
    args = ["--log-format", "json"] if how == "option" else []
    env = {"KIT_LOG_FORMAT": " JSON "} if how == "env" else {}
    # `broker status` has no level of its own: JSON logs at WARNING, text only with a level
    level = ["--log-level", "warning"] if how == "default" else []
    code, lines, _took = run_python(tmp_path, str(script), *level, *args, "broker", "status", **env)
    assert code == 0, lines
    assert lines[0] == "not running", lines  # what the command prints is not a log line
    [logged] = lines[1:]
    if how == "default":
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING kit.test: from kit", logged
        )
    else:
        line = json.loads(logged)
        assert (line["level"], line["logger"], line["message"], line["n"]) == (
            "WARNING",
            "kit.test",
            "from kit",
            1,
        )


def test_librdkafka_lines_come_out_as_json(json_log: Any) -> None:
    """A producer pointed at a closed port: librdkafka's line reaches kit.librdkafka, which
    the JSON formatter writes like any other."""
    _logger, out = json_log
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    librdkafka = LIBRDKAFKA_LOG.logger
    librdkafka.addHandler(handler)
    old_level = librdkafka.level
    librdkafka.setLevel(logging.DEBUG)
    port = closed_port()
    producer = make_producer(Settings(bootstrap_servers=f"127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + 15
        while str(port) not in out.getvalue() and time.monotonic() < deadline:
            producer.poll(0.05)
    finally:
        librdkafka.removeHandler(handler)
        librdkafka.setLevel(old_level)
    ours = [line for line in objects(out) if str(port) in line["message"]]
    assert ours, out.getvalue()
    assert ours[0]["logger"] == "kit.librdkafka"
    assert ours[0]["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}


def test_kit_run_against_a_closed_port_logs_librdkafka_as_json(tmp_path: Path) -> None:
    """The whole command: the librdkafka line a client logs is a JSON object, and nothing
    but the final error line (not a log line) is plain text: diagnose's probe keeps its
    lines to itself and logs them through kit.kafka, at DEBUG."""
    port = closed_port()
    code, lines, _took = run_kit(
        tmp_path,
        "run",
        "tests.fixtures.billing:service",
        KIT_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        KIT_CONNECT_TIMEOUT="2",
        KIT_LOG_FORMAT="json",
    )
    assert code == 2, lines
    *logged, error = lines
    assert error.startswith("kit: configuration error: KIT_BOOTSTRAP_SERVERS"), lines
    parsed = [json.loads(line) for line in logged if not line.startswith("kit: ")]  # stdout
    assert not [line for line in lines if line.startswith("%")], lines  # librdkafka's own
    refused = [p for p in parsed if "Connection refused" in p["message"]]
    assert [p["logger"] for p in refused] == ["kit.librdkafka"], lines
