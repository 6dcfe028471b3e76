"""``kit broker start|stop|status|kill|restart``: the local Apache Kafka of kit.broker.local."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kit.cli.errors import Exit, guarded

if TYPE_CHECKING:
    from kit.broker.info import BrokerInfo

__all__ = ["broker"]

# Exit 1 of `kit broker status` means "not running", so a failure of any subcommand exits 2;
# errors print their message alone, as `kit broker` always has.
_guarded = guarded("kit broker", answers=True, bare=True)
_CLUSTER_SIZE = 3  # kit.broker.cluster.CLUSTER_SIZE; a test keeps them equal


@click.group("broker", short_help="Start, stop, check the local Kafka: kit broker status.")
def broker() -> None:
    """Run a local Apache Kafka: one broker, or a replicated three-broker cluster."""


@broker.command("start")
@click.option(
    "--port", type=int, default=None, help="client port (default 9092; a cluster: P..P+2)"
)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds to wait")
@click.option(
    "--sasl",
    is_flag=True,
    default=None,
    help="clients authenticate with SASL/SCRAM-SHA-512 and ACLs apply (super user admin, "
    "password KIT_BROKER_ADMIN_PASSWORD or generated); kept by the data dir",
)
@click.option(
    "--brokers",
    type=click.Choice([1, _CLUSTER_SIZE]),
    default=None,
    help="3 runs a local KRaft cluster of three broker+controller nodes (replication 3, "
    "min.insync.replicas 2); kept by the data dir (default: 1 for new data)",
)
@_guarded
def start(port: int | None, timeout: float, sasl: bool | None, brokers: int | None) -> int:
    """Start the broker (or report the running one)."""
    from kit.broker import local

    info = local.start(port, timeout=timeout, sasl=sasl, brokers=brokers)
    _print_started(info)
    return Exit.OK


@broker.command("stop")
@_guarded
def stop() -> int:
    """Stop the broker (every node of a cluster)."""
    from kit.broker import local

    print("stopped" if local.stop() else "not running")
    return Exit.OK


@broker.command("status")
@_guarded
def status() -> int:
    """Exit 0 if the broker runs and answers, else 1."""
    from kit.broker import local

    found = local.status()
    if found is None:
        print("not running")
        return Exit.FAILED
    _print_status(found)
    return Exit.OK


@broker.command("kill")
@click.argument("node", type=int)
@_guarded
def kill(node: int) -> int:
    """SIGKILL one node of a cluster (fault tests); NODE is its id (1..3)."""
    from kit.broker import local

    pid = local.kill_node(node)
    print(f"killed node {node} (pid {pid})")
    return Exit.OK


@broker.command("restart")
@click.argument("node", type=int)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds to wait")
@_guarded
def restart(node: int, timeout: float) -> int:
    """Start a killed node of a cluster again; NODE is its id (1..3)."""
    from kit.broker import local

    back = local.restart_node(node, timeout=timeout)
    print(f"node {back.node_id} is back at {back.address} (pid {back.pid})")
    return Exit.OK


def _cluster_lines(info: BrokerInfo) -> list[str]:
    """One line per node, then how to point kit at the cluster."""
    import shlex

    from kit.broker.sasl import connect_lines

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
    from kit.broker.sasl import connect_lines

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
    from kit.broker.sasl import connect_lines

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
