"""Each benchmark in bench/ runs on a tiny input and prints its JSON (no figure is checked)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240.0  # seconds per script; bench.instructions under valgrind takes the longest

RPC_KEYS = ("p50_ms", "p99_ms", "rps_64", "rps_256", "cpu_us_256", "throughput_requests")
RPC_BREAKDOWN_KEYS = ("caller_us", "responder_us", "typed_us", "hand_off_us")
RPC_CONTENDERS = ("kit", "ceiling-bare", "ceiling-typed", "faust", "kit-caller", "kit-responder")
RPC_ONLY = ["--only", ",".join(RPC_CONTENDERS)]
PIPELINE_KEYS = ("name", "events_per_s", "complete", "output_records", "committed")

# (module, arguments, the keys its JSON must hold). Tiny inputs; --no-doc wherever the
# script would otherwise append to docs/. bench.faust_rpc is not a script of its own: it is
# the Faust worker bench.rpc starts for its "faust" contender, so that contender runs it.
# bench.soak joins the list while bench/soak.py exists.
SCRIPTS: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("pipeline", ["--events", "2000", "--only", "kit,raw", "--no-doc"], ("events", "results")),
    (
        "rpc",
        ["--requests", "200", "--latency", "50", "--warmup", "10", "--no-doc", *RPC_ONLY],
        RPC_CONTENDERS,
    ),
    (
        "rpc_ceiling",
        ["--requests", "200", "--latency", "50", "--warmup", "10"],
        ("ceiling-bare", "ceiling-typed"),
    ),
    ("waiting", ["--events", "300"], ("events_per_s", "handled", "peak_concurrency")),
    ("workers", ["--events", "1000", "--repeat", "1"], ("median_events_per_s", "results")),
    (
        "startup",
        ["--repeat", "1"],
        ("run_to_ready_s", "runtime_start_s", "start_to_ready_s", "client_first_call_s"),
    ),
    ("kit_breakdown", ["--events", "1000", "--no-doc"], ("stages", "kit_total", "raw_total")),
    (
        "rpc_breakdown",
        ["--calls", "500", "--runs", "1", "--hand-offs", "50", "--no-doc"],
        RPC_BREAKDOWN_KEYS,
    ),
    ("instructions", ["--events", "200"], ("events", "instructions_per_event")),
    ("registry", ["2"], ("ready_to_visible_ms", "kill9_to_gone_s", "lookup_us")),
    ("replay", ["1000"], ("events", "record_per_s", "replay_per_s", "file_bytes_per_event")),
    (
        "kit_whatif",
        ["--events", "1000", "--repeat", "1", "--variants", "none", "--no-doc"],
        ("results", "in_process_us"),
    ),
]
if (ROOT / "bench" / "soak.py").exists():
    SCRIPTS.append(("soak", ["--events", "2000", "--calls", "200"], ("events", "rss_mb", "checks")))


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object that ends the output (a script may print other lines before it)."""
    decoder = json.JSONDecoder()
    starts = [0] + [i + 1 for i, ch in enumerate(stdout) if ch == "\n"]
    for start in reversed(starts):
        if not stdout.startswith("{", start):
            continue
        try:
            value, end = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and not stdout[end:].strip():
            return value
    raise AssertionError(f"no JSON object ends the output:\n{stdout[-2000:]}")


def run_script(module: str, args: list[str], bootstrap: str) -> str:
    """`python -m bench.MODULE ARGS` from the repository root, as a user runs it; its stdout.

    The script runs in a session of its own, so a timeout ends it and whatever it started.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KIT_BOOTSTRAP_SERVERS": bootstrap}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"bench.{module} did not finish in {TIMEOUT:.0f}s:\n{err[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"bench.{module} exited {proc.returncode}:\n{err[-3000:]}"
    return out


def check_parts(module: str, report: dict[str, Any]) -> None:
    """The parts of a report that each hold one contender's (or variant's) figures."""
    if module in ("rpc", "rpc_ceiling"):
        for name, part in report.items():
            assert "error" not in part, f"{name}: {part['error']}"
            assert set(RPC_KEYS) <= set(part), f"{name}: {sorted(part)}"
    elif module in ("pipeline", "kit_whatif"):
        for part in report["results"]:
            assert "error" not in part, f"{part.get('name')}: {part['error']}"
            assert set(PIPELINE_KEYS) <= set(part), sorted(part)
            assert part["complete"] is True, part
    elif module == "workers":
        for part in report["results"]:
            assert {"workers", "events_per_s", "processes"} <= set(part), sorted(part)


@pytest.mark.parametrize(
    ("module", "args", "keys"), SCRIPTS, ids=[module for module, _a, _k in SCRIPTS]
)
def test_benchmark_runs_on_a_tiny_input(
    kafka_bootstrap: str, module: str, args: list[str], keys: tuple[str, ...]
) -> None:
    if module == "instructions" and shutil.which("valgrind") is None:
        pytest.fail("bench.instructions needs valgrind, which is not installed (apt valgrind)")
    report = last_json(run_script(module, args, kafka_bootstrap))
    missing = [key for key in keys if key not in report]
    assert not missing, f"bench.{module} printed no {missing}: {sorted(report)}"
    check_parts(module, report)
