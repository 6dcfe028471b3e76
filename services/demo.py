"""The demo: the whole shop running on a real broker, each service in its own process.

`./dev demo [--orders N]` sets everything up and runs this; in the venv it is
`python -m services.demo [--orders N]`. It starts a local Kafka unless
KIT_BOOTSTRAP_SERVERS names a cluster, runs the scenario of services/shop_demo (orders,
inventory, payments, notifications under `kit run`, and the Faust worker of
customer_stats), prints the account, and exits 1 if any count does not add up.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _say(text: str) -> None:
    print(f"demo | {text}", flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./dev demo", description="Run the example shop end to end on a real broker."
    )
    parser.add_argument("--orders", type=int, default=50, help="orders to place (default 50)")
    parser.add_argument("--logs", type=Path, help="folder for the processes' logs")
    parser.add_argument(
        "--no-fail-fast", action="store_true", help="skip stopping inventory at the end"
    )
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the shop demo; 0 when every count adds up and every process stopped cleanly."""
    args = _parse(argv)
    from kit.broker.local import ensure_running, status, stop
    from kit.errors import KitError
    from services.shop_demo.run import ShopOptions, run_shop

    started_broker = False
    if not os.environ.get("KIT_BOOTSTRAP_SERVERS"):
        started_broker = status() is None
        try:
            info = ensure_running()
        except KitError as exc:  # no Java, a taken port, ...: one line, as `kit broker`
            _say(f"cannot start the local broker: {exc}")
            return 2
        os.environ["KIT_BOOTSTRAP_SERVERS"] = info.bootstrap_servers
        _say(f"local Apache Kafka {info.version} at {info.bootstrap_servers}")
    else:
        _say(f"using the cluster at {os.environ['KIT_BOOTSTRAP_SERVERS']}")
    ok = False
    try:
        options = ShopOptions(
            orders=args.orders, log_dir=args.logs, fail_fast=not args.no_fail_fast
        )
        account, _lines = run_shop(options)
        ok = account.ok
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except (KitError, RuntimeError, TimeoutError) as exc:  # a service that did not start, ...
        _say(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if started_broker:
            gc.collect()  # the run's closed clients, in reference cycles, go now: else one
            # may log a refused reconnect while the broker stops
            stop()
            _say("stopped the local broker")
    _say("OK: every count adds up" if ok else "FAILED: see the checks above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
