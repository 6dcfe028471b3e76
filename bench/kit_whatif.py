"""What-if: the pipeline benchmark's kit contender with proposed kit changes patched in at run time.

Sizes suggested changes before anyone edits kit/. Each variant is a comma-separated list
of patches, applied in the contender's process before kit loads any schema:

  novalidate  Codec.decode builds the event from the decoded dict without pydantic
              validation (what model_construct does, minus its defaults pass). Sound only
              when the writer schema is the reader's and the model adds no constraints or
              validators beyond the Avro types check_model() already matched; measured here
              to size validation.
  inplace     Not a kit change: the benchmark handler flips `ok` on the event it was given
              and publishes that object, instead of publishing `model_copy(update=...)`.
              Sizes what the handler's copy costs (the peers mutate their decoded dict).

(Two earlier variants, fastavro parse hints and `__dict__` encoding, landed in c5b2303.)

Each variant is measured twice: in-process (µs per event through kit's Dispatcher with no
broker, precise to a few percent) and end to end on Kafka (events/s, same topics, prefill,
timing and checks as bench/pipeline.py; noisier, ±15-30% between rounds on 2 shared cores).

Run:
    PYTHONPATH=. python -m bench.kit_whatif --events 200000 --repeat 3
    PYTHONPATH=. python -m bench.kit_whatif --variants "none;inplace" --repeat 1 --no-doc
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = "none;novalidate;inplace;novalidate,inplace"


def apply(patches: set[str]) -> None:
    """Monkeypatch kit in this process (call before importing anything that loads schemas)."""
    import kit.codec

    if "novalidate" in patches:

        def decode(self: Any, data: bytes | None, model: Any) -> Any:
            value = self.decode_dict(data, model.__kit_schema__)
            event = model.__new__(model)  # what model_construct does, minus its defaults pass
            object.__setattr__(event, "__dict__", value)
            object.__setattr__(event, "__pydantic_fields_set__", set(value))
            object.__setattr__(event, "__pydantic_extra__", None)
            object.__setattr__(event, "__pydantic_private__", None)
            return event

        kit.codec.Codec.decode = decode  # type: ignore[method-assign]
    if "inplace" in patches:
        from bench.contenders import kit_service

        kit_service.make_service = make_inplace_service


def make_inplace_service(topic: str, output: str, group: str, meter: Any) -> Any:
    """kit_service.make_service with a handler that flips `ok` in place (no model_copy)."""
    from bench.reading import Reading
    from kit import Context, Service

    svc = Service("bench-kit", group_id=group)

    async def on_reading(event: Reading, ctx: Context) -> None:
        meter.start()
        event.ok = not event.ok
        ctx.publish(event, key=ctx.key, topic=output)

    on_reading.__annotations__ = {"event": Reading, "ctx": Context, "return": None}
    svc.handler(topic=topic, partitions=6)(on_reading)
    return svc


def child() -> None:
    """Patched mode: time the in-process record path, or run the kit contender on Kafka."""
    patches = set(os.environ["BENCH_KIT_PATCH"].split(",")) - {"none", ""}
    apply(patches)
    if os.environ.get("BENCH_KIT_INPROCESS"):
        from bench.common import emit
        from bench.kit_breakdown import kit_total, messages

        emit({"us_per_event": round(kit_total(messages("in", 20_000, 500), "in"), 2)})
        return
    from bench.contenders import kit_service

    kit_service.main()


def in_process(variant: str) -> float:
    """µs per event through the patched Dispatcher, no broker (bench/kit_breakdown.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_KIT_PATCH": variant}
    env["BENCH_KIT_INPROCESS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.kit_whatif"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{variant}: {proc.stderr.strip()[-300:]}")
    return float(json.loads(lines[-1][len("RESULT ") :])["us_per_event"])


def main() -> None:
    from bench.pipeline import run_contender, summarize
    from bench.reading import records
    from bench.report import machine

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=VARIANTS, help="';'-separated patch lists")
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks-history.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if not args.bootstrap:
        from kit.broker.local import running_address

        args.bootstrap = running_address() or "127.0.0.1:9092"
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    data = records(args.events)
    tag = f"bench-whatif-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    micro: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for variant in variants:
            micro[variant].append(in_process(variant))
    print(json.dumps(micro), file=sys.stderr, flush=True)
    runs = []
    for round_ in range(args.repeat):
        for n, variant in enumerate(variants):
            result = run_contender(
                "kit",
                args,
                data,
                f"{tag}-r{round_}-v{n}",
                module="bench.kit_whatif",
                env={"BENCH_KIT_PATCH": variant},
            )
            result["name"] = variant
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    report = {
        "command": "python -m bench.kit_whatif " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.bootstrap),
        "events": args.events,
        "results": summarize(runs, variants),
        "in_process_us": {v: statistics.median(us) for v, us in micro.items()},
    }
    print(json.dumps(report, indent=2))
    if not args.no_doc:
        with open(args.doc, "a") as doc:
            doc.write("\n" + markdown(report))


def markdown(report: dict[str, Any]) -> str:
    """The what-if table: per variant, in-process µs/event and end-to-end events/s."""
    m = report["machine"]
    rows = report["results"]
    micro = report["in_process_us"]
    base = next((r["events_per_s"] for r in rows if r["name"] == "none"), 0)
    base_us = micro.get("none", 0.0)
    out = [
        f"### What-if: kit with proposed changes patched in at run time ({report['date']})",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: nproc {m['nproc']}, {m['cpu']}, Python {m['python']}; broker {m['broker']}",
        f"- kit at commit {m['kit_commit']}",
        f"- Workload: as the pipeline benchmark, kit contender only, {report['events']:,} events;"
        " in-process = Dispatcher.handle_batch on 20,000 records with no broker"
        " (bench/kit_breakdown.py), median of the rounds",
        "",
        "| patches | in-process µs/event | Δ µs | end-to-end events/s (median) | ÷ unpatched"
        " | outputs | committed | all rounds (events/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        eps = r.get("events_per_s", 0)
        ratio = f"{eps / base:.2f}x" if base and eps else "n/a"
        us = micro.get(r["name"], 0.0)
        out.append(
            f"| {r['name']} | {us:.2f} | {us - base_us:+.2f} | {eps:,} | {ratio}"
            f" | {r.get('output_records', 0):,} | {r.get('committed', 0):,}"
            f" | {', '.join(f'{v:,}' for v in r.get('all_events_per_s', []))} |"
        )
    return "\n".join([*out, "", ""])


if __name__ == "__main__":
    if "BENCH_KIT_PATCH" in os.environ:
        child()
    else:
        main()
