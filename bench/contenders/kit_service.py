"""kit: a `Service` with one async handler that publishes a copy of each Reading with `ok` flipped.

Runs `kit.Runtime(service, settings)` (`start()`, `run()`, `stop()`) and stops once
`dispatcher.handled` reached N and the producer has no record left unconfirmed
(`len(producer) == 0` counts queued, in-flight and not yet served delivery reports).

Run alone (the driver normally does this):
    PYTHONPATH=. python -m bench.contenders.kit_service --input T --output O --group G --events N
`--profile out.txt` samples the run with pyinstrument; `--profile out.pstats` uses cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator

from bench.common import Meter, contender_args, emit
from bench.reading import Reading
from kit import Context, Runtime, Service, load_settings


def make_service(topic: str, output: str, group: str, meter: Meter) -> Service:
    """The service under test: Reading in, Reading (ok flipped) out, keyed like its input."""
    svc = Service("bench-kit", group_id=group)

    @svc.handler(topic=topic, partitions=6)
    async def on_reading(event: Reading, ctx: Context) -> None:
        meter.start()
        ctx.publish(event.model_copy(update={"ok": not event.ok}), key=ctx.key, topic=output)

    return svc


@contextlib.contextmanager
def profiled(path: str) -> Iterator[None]:
    """Profile the block into `path` (.pstats: cProfile, else pyinstrument text)."""
    if not path:
        yield
    elif path.endswith(".pstats"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
        try:
            yield
        finally:
            profile.disable()
            profile.dump_stats(path)
    else:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()
            with open(path, "w") as out:
                out.write(profiler.output_text(unicode=True, show_all=False))


async def run(args: argparse.Namespace) -> dict[str, object]:
    meter = Meter(args.events)
    settings = load_settings(bootstrap_servers=args.bootstrap, batch_size=args.batch)
    service = make_service(args.input, args.output, args.group, meter)
    runtime = Runtime(service, settings)
    await runtime.start()
    deadline = time.monotonic() + args.timeout
    with profiled(args.profile):
        task = asyncio.create_task(runtime.run(), name="bench-kit-runtime")
        dispatcher, producer = runtime.dispatcher, runtime.sink.producer
        transactions = runtime.transactions  # exactly-once: done when the last one committed
        while time.monotonic() < deadline and not task.done():
            settled = transactions is None or not transactions.open
            if dispatcher.handled >= meter.events and len(producer) == 0 and settled:
                meter.finish()
                break
            await asyncio.sleep(0.01 if dispatcher.handled < meter.events * 0.99 else 0.001)
        runtime.stop()
        await asyncio.wait_for(task, 60)
    handled = dispatcher.handled
    return meter.result("kit", handled, handled if meter.last else 0)


def main() -> None:
    args = contender_args(__doc__ or "")
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
