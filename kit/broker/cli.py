"""``kit broker start|stop|status|kill|restart``: the local broker's command line."""

from __future__ import annotations

import argparse
import shlex
import sys

from kit.broker import local
from kit.broker.info import BrokerInfo
from kit.broker.sasl import connect_lines
from kit.errors import KitError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kit broker",
        description="Run a local Apache Kafka: one broker, or a replicated three-broker cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start the broker (or report the running one)")
    start.add_argument(
        "--port", type=int, default=None, help="client port (default 9092; a cluster: P..P+2)"
    )
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    start.add_argument(
        "--sasl",
        action="store_true",
        default=None,
        help="clients authenticate with SASL/SCRAM-SHA-512 and ACLs apply (super user admin, "
        "password KIT_BROKER_ADMIN_PASSWORD or generated); kept by the data dir",
    )
    start.add_argument(
        "--brokers",
        type=int,
        choices=(1, local.CLUSTER_SIZE),
        default=None,
        help="3 runs a local KRaft cluster of three broker+controller nodes (replication 3, "
        "min.insync.replicas 2); kept by the data dir (default: 1 for new data)",
    )
    commands.add_parser("stop", help="stop the broker (every node of a cluster)")
    commands.add_parser("status", help="exit 0 if the broker runs and answers, else 1")
    kill = commands.add_parser("kill", help="SIGKILL one node of a cluster (fault tests)")
    kill.add_argument("node", type=int, help="node id (1..3)")
    restart = commands.add_parser("restart", help="start a killed node of a cluster again")
    restart.add_argument("node", type=int, help="node id (1..3)")
    restart.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    return parser


def _cluster_lines(info: BrokerInfo) -> list[str]:
    """One line per node, then how to point kit at the cluster."""
    lines = []
    for node in info.nodes:
        alive = f"pid {node.pid}, " if node.pid is not None else ""
        lines.append(
            f"  node {node.node_id}: {alive}port {node.port}, controller port "
            f"{node.controller_port}, {'alive' if node.alive else 'down'}"
        )
    if info.sasl:
        return lines + connect_lines(info)
    lines.append("Use it from kit with:")
    lines += [f"  export {key}={shlex.quote(value)}" for key, value in info.client_env().items()]
    return lines


def _print_started(info: BrokerInfo) -> None:
    if info.nodes:
        print(
            f"kafka {info.version} cluster of {info.brokers} brokers ready at "
            f"{info.bootstrap_servers} (data {info.data_dir})"
        )
        print("\n".join(_cluster_lines(info)))
        return
    print(
        f"kafka {info.version} ready at {info.bootstrap_servers} "
        f"(pid {info.pid}, data {info.data_dir})"
    )
    if info.sasl:
        print("\n".join(connect_lines(info)))


def _print_status(info: BrokerInfo) -> None:
    if info.nodes:
        alive = sum(node.alive for node in info.nodes)
        print(
            f"running at {info.bootstrap_servers} ({info.brokers} brokers, {alive} alive, "
            f"kafka {info.version})"
        )
        print("\n".join(_cluster_lines(info)))
        return
    print(f"running at {info.bootstrap_servers} (pid {info.pid}, kafka {info.version})")
    if info.sasl:
        print("\n".join(connect_lines(info)))


def main(argv: list[str]) -> int:
    """Run ``kit broker ...`` with ``argv``; return the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "start":
            info = local.start(
                args.port, timeout=args.timeout, sasl=args.sasl, brokers=args.brokers
            )
            _print_started(info)
            return 0
        if args.command == "stop":
            print("stopped" if local.stop() else "not running")
            return 0
        if args.command == "kill":
            pid = local.kill_node(args.node)
            print(f"killed node {args.node} (pid {pid})")
            return 0
        if args.command == "restart":
            node = local.restart_node(args.node, timeout=args.timeout)
            print(f"node {node.node_id} is back at {node.address} (pid {node.pid})")
            return 0
        found = local.status()
        if found is None:
            print("not running")
            return 1
        _print_status(found)
        return 0
    except KitError as exc:
        print(f"kit broker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # start() already stopped what it launched
        print("kit broker: interrupted", file=sys.stderr)
        return 130
