"""A bad KIT_LOG_LEVEL is one line naming the variable, not click's usage text (issue 11,
point 5)."""

from __future__ import annotations

from pathlib import Path

from kit import ConfigError
from kit.cli.errors import exit_code
from tests.unit.no_broker import run_kit


def test_a_bad_kit_log_level_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    code, lines, _took = run_kit(tmp_path, "services", KIT_LOG_LEVEL="LOUD")
    assert code == exit_code(ConfigError("KIT_LOG_LEVEL", "bad")) == 2
    assert lines == [
        "kit: configuration error: KIT_LOG_LEVEL: 'LOUD' is not a log level "
        "(DEBUG, INFO, WARNING, ERROR, CRITICAL)"
    ]


def test_a_bad_log_level_option_is_still_a_usage_error(tmp_path: Path) -> None:
    code, lines, _took = run_kit(tmp_path, "--log-level", "LOUD", "services")
    assert code == 2
    assert "Invalid value for '--log-level'" in lines[-1]


def test_a_good_kit_log_level_any_case_is_taken(tmp_path: Path) -> None:
    code, lines, _took = run_kit(tmp_path, "broker", "status", KIT_LOG_LEVEL=" debug ")
    assert code == 1  # not running: the answer, not a configuration error
    assert lines == ["not running"]


def test_the_registry_clients_request_lines_show_only_at_debug() -> None:
    import logging

    from kit.cli.options import configure_logging

    http = logging.getLogger("httpx2")  # one INFO line per schema registry request
    configure_logging("INFO")
    assert not http.isEnabledFor(logging.INFO) and http.isEnabledFor(logging.WARNING)
    configure_logging("DEBUG")
    assert http.isEnabledFor(logging.DEBUG)
    configure_logging("WARNING")
