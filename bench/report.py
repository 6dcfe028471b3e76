"""The machine description and the Markdown table that bench/pipeline.py appends to the docs."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TARGET_EVENTS_PER_S = 25_000
TARGET_OF_RAW = 0.80
REFERENCES = {"kit", "raw", "raw-pydantic"}
PACKAGES = ["confluent-kafka", "fastavro", "pydantic", "faststream", "aiokafka", "faust-streaming"]
INTRO = """# Benchmarks

Measured figures only. Each section of the results log was appended by a benchmark
script; the command, machine, kit commit and date are in its header.

## Results log
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _broker_version(bootstrap: str) -> str:
    try:
        from kit.broker.local import status

        info = status()
    except Exception:
        info = None
    if info is not None and info.bootstrap_servers == bootstrap:
        return f"Apache Kafka {info.version} (kit broker, same machine, KRaft, 1 node)"
    return os.environ.get("BENCH_BROKER_VERSION", "unknown (not the kit local broker)")


def _kit_commit() -> str:
    """The checked-out commit of this repo, with `+changes` if kit/ has uncommitted edits."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "kit"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" +changes in kit/" if dirty else "")


def machine(bootstrap: str) -> dict[str, Any]:
    """nproc, CPU model, Python, broker and client library versions."""
    import confluent_kafka

    libs = {}
    for name in PACKAGES:
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = "absent"
    libs["librdkafka"] = confluent_kafka.libversion()[0]
    return {
        "kit_commit": _kit_commit(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "broker": _broker_version(bootstrap),
        "bootstrap": bootstrap,
        "libraries": libs,
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _per_round(by: dict[str, dict[str, Any]], name: str, times: bool = False) -> str:
    """kit ÷ `name` in each round (the rounds interleave contenders), and their median."""
    kit = by["kit"].get("all_events_per_s", [])
    other = by[name].get("all_events_per_s", [])
    ratios = [k / o for k, o in zip(kit, other, strict=False) if k and o]
    if len(ratios) < 2:
        return ""
    fmt = "{:.2f}x" if times else "{:.0%}"
    listed = ", ".join(fmt.format(r) for r in ratios)
    return f"; per round {listed}, median {fmt.format(statistics.median(ratios))}"


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Met / missed lines for kit's targets (on the median rows, per-round ratios shown)."""
    by = {r["name"]: r for r in rows}
    if "kit" not in by:
        return ["kit was not run: no target evaluated."]
    kit = by["kit"].get("events_per_s", 0)
    lines = []
    ok = kit >= TARGET_EVENTS_PER_S
    lines.append(
        f"kit ≥ {TARGET_EVENTS_PER_S:,} events/s per process: **{'met' if ok else 'missed'}**"
        f" ({kit:,} events/s)"
    )
    raw = by.get("raw", {}).get("events_per_s", 0)
    if raw:
        ok = kit >= TARGET_OF_RAW * raw
        lines.append(
            f"kit ≥ {TARGET_OF_RAW:.0%} of the hand-written loop: **{'met' if ok else 'missed'}**"
            f" (medians: {kit / raw:.0%}{_per_round(by, 'raw')})"
        )
    typed = by.get("raw-pydantic", {}).get("events_per_s", 0)
    if typed:
        lines.append(
            f"not a target — kit ÷ the same loop doing the same pydantic work: {kit / typed:.0%}"
            f"{_per_round(by, 'raw-pydantic')}"
        )
    peers = {n: r["events_per_s"] for n, r in by.items() if n not in REFERENCES}
    if peers:
        behind = [n for n, v in peers.items() if v >= kit]
        verdict = "met" if not behind else f"missed (behind {', '.join(behind)})"
        closest = max(peers, key=lambda n: peers[n])
        lines.append(
            f"kit ahead of every peer: **{verdict}** (closest: {closest},"
            f" kit ÷ it {kit / peers[closest]:.2f}x{_per_round(by, closest, times=True)})"
            if peers[closest]
            else f"kit ahead of every peer: **{verdict}**"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """One section: header, machine, table, ratios, targets."""
    m = report["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    rows = report["results"]
    kit = next((r["events_per_s"] for r in rows if r["name"] == "kit"), 0)
    out = [
        f"### Pipeline consume → decode → handler → encode → produce → commit ({report['date']})",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: nproc {m['nproc']}, {m['cpu']}, Python {m['python']}; broker {m['broker']}",
        f"- kit at commit {m.get('kit_commit', 'unknown')}; libraries: {libs}",
        f"- Workload: {report['events']:,} events per contender, {report['value_bytes']} bytes"
        f" each (Avro single-object), 6 partitions, batch {report['batch']},"
        f" {report['repeat']} round(s), median shown; fresh topics and group per run",
        "- Timed from each contender's first consumed record to its last output confirmed by"
        " the broker; CPU s is the contender process (all threads) over that window; the"
        " broker shares the machine. Load before = 1-minute load average before the run.",
        "",
        "| contender | events/s | seconds | CPU s | peak RSS MiB | outputs | committed"
        " | output check | load before | kit ÷ this | all rounds (events/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        eps = r.get("events_per_s", 0)
        note = "" if r.get("complete") else f" (incomplete: {r.get('error', 'see JSON')})"
        out.append(
            f"| {r['name']}{note} | {eps:,} | {r.get('seconds', 0)} | {r.get('cpu_s', 0)}"
            f" | {r.get('peak_rss_mb', 0)} | {r.get('output_records', 0):,}"
            f" | {r.get('committed', 0):,} | {r.get('sample', '')} | {r.get('load_before', '')}"
            f" | {'—' if r['name'] == 'kit' else _ratio(kit, eps)}"
            f" | {', '.join(f'{v:,}' for v in r.get('all_events_per_s', []))} |"
        )
    out += ["", "Targets:", ""] + [f"- {line}" for line in targets(rows)] + ["", ""]
    return "\n".join(out)


def append_markdown(path: Path, report: dict[str, Any]) -> None:
    """Append the section to `path`, creating the file with an intro if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else INTRO + "\n"
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "\n" + markdown(report))


def in_process_head(title: str, report: dict[str, Any]) -> list[str]:
    """The first lines of an in-process breakdown's section: title, command, machine."""
    m = report["machine"]
    return [
        f"### {title} ({report['date']})",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: nproc {m['nproc']}, {m['cpu']}, Python {m['python']}",
        f"- kit at commit {m['kit_commit']}",
        "",
    ]


def emit(report: dict[str, Any], section: str, doc: str | None) -> None:
    """Print `report` as JSON; append `section` to the file `doc`, unless it is None."""
    import json

    print(json.dumps(report, indent=2))
    if doc is not None:
        with open(doc, "a") as out:
            out.write("\n" + section)
