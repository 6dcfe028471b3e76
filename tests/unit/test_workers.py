"""`kit run --workers N`: the argument's checks and the Supervisor, with stand-in workers."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import time
from pathlib import Path

import pytest

import kit.workers
from kit.cli import main
from kit.errors import ConfigError
from kit.workers import Supervisor, check_workers

CHILD = Path(__file__).resolve().parents[1] / "fixtures" / "worker_child.py"


@pytest.mark.parametrize("workers", [0, -1])
def test_fewer_than_one_worker_is_a_config_error_naming_the_option(workers: int) -> None:
    with pytest.raises(ConfigError) as caught:
        check_workers(workers)
    assert caught.value.setting == "--workers"
    assert check_workers(1) == 1


def test_kit_run_with_zero_workers_exits_2_naming_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--workers", "0", "tests.fixtures.billing:service"]) == 2
    assert "--workers: must be at least 1" in capsys.readouterr().err


def test_kit_run_with_workers_runs_kit_run_children_with_the_global_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[list[str], int, float]] = []

    def fake(argv: list[str], workers: int, stop_timeout: float, say: object) -> int:
        seen.append((list(argv), workers, stop_timeout))
        return 7

    monkeypatch.setattr(kit.workers, "supervise", fake)
    monkeypatch.setenv("KIT_SHUTDOWN_TIMEOUT", "12")
    monkeypatch.setenv("KIT_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    code = main(
        ["--log-level", "warning", "run", "--workers", "3", "tests.fixtures.billing:service"]
    )
    assert code == 7
    assert seen == [(["--log-level", "WARNING", "run", "tests.fixtures.billing:service"], 3, 17.0)]


class Run:
    """A Supervisor of stand-in workers, run as a task, its output collected."""

    def __init__(self, mode: str, workers: int, folder: Path, stop_timeout: float = 20) -> None:
        self.out, self.err, self.said = io.StringIO(), io.StringIO(), []
        command = [sys.executable, str(CHILD), mode, str(folder), str(workers)]
        self.supervisor = Supervisor(
            command,
            workers,
            stop_timeout,
            say=self.said.append,
            stdout=self.out,
            stderr=self.err,
        )
        self.task = asyncio.create_task(self.supervisor.run())

    async def ready(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.out.getvalue().count("kit: ready") < count:
            assert not self.task.done(), (self.out.getvalue(), self.err.getvalue())
            assert time.monotonic() < deadline, self.out.getvalue()
            await asyncio.sleep(0.01)

    async def code(self) -> int:
        return await asyncio.wait_for(self.task, 60)


def test_a_signal_is_forwarded_to_every_worker_and_all_stop_with_0(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = Run("ok", 3, tmp_path)
        await run.ready(3)
        run.supervisor.signalled(signal.SIGINT)
        assert await run.code() == 0
        out = run.out.getvalue()
        assert out.count("got SIGINT") == 3
        pids = {w.process.pid for w in run.supervisor.workers}
        assert len(pids) == 3
        for number, pid in enumerate(sorted(pids, key=_order(run)), start=1):
            assert f"[worker {number} pid {pid}] kit: ready {pid}" in out
            assert f"[worker {number} pid {pid}] got SIGINT" in out
        assert any("SIGINT: stopping 3 workers" in line for line in run.said)

    asyncio.run(scenario())


def _order(run: Run) -> object:
    numbers = {w.process.pid: w.number for w in run.supervisor.workers}
    return lambda pid: numbers[pid]


def test_sigterm_sent_to_the_supervisor_process_reaches_the_workers(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = Run("ok", 2, tmp_path)
        await run.ready(2)
        signal.raise_signal(signal.SIGTERM)  # the supervisor's loop handler takes it
        assert await run.code() == 0
        assert run.out.getvalue().count("got SIGTERM") == 2

    asyncio.run(scenario())


def test_a_crashing_worker_stops_the_others_and_its_code_is_the_exit_code(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        run = Run("crash", 3, tmp_path)
        assert await run.code() == 3
        assert run.out.getvalue().count("got SIGTERM") == 2
        assert "crashing" in run.err.getvalue()
        crashed = [w for w in run.supervisor.workers if w.code == 3]
        assert len(crashed) == 1
        assert [w.code for w in run.supervisor.workers].count(0) == 2
        (line,) = [s for s in run.said if "failed with code 3" in s]
        assert f"worker {crashed[0].number} (pid {crashed[0].process.pid})" in line
        assert "stopping the other 2" in line

    asyncio.run(scenario())


def test_a_worker_that_ignores_the_stop_is_killed_after_the_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = Run("stubborn", 2, tmp_path, stop_timeout=0.5)
        await run.ready(2)
        run.supervisor.signalled(signal.SIGTERM)
        assert await run.code() == 1
        workers = run.supervisor.workers
        assert [w.killed for w in workers] == [True, True]
        assert [w.code for w in workers] == [-signal.SIGKILL, -signal.SIGKILL]
        killed = [s for s in run.said if "did not stop within 0.5s: killing it" in s]
        assert len(killed) == 2

    asyncio.run(scenario())


def test_json_log_lines_pass_unprefixed(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = Run("json", 1, tmp_path)
        await run.ready(1)
        run.supervisor.signalled(signal.SIGTERM)
        assert await run.code() == 0
        assert '{"level": "INFO", "message": "as json"}\n' in run.err.getvalue().splitlines(
            keepends=True
        )

    asyncio.run(scenario())


def test_a_worker_that_cannot_start_stops_the_ones_already_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor = Supervisor([sys.executable, str(CHILD), "ok", str(tmp_path), "2"], 2, 20)
        spawn = supervisor._spawn
        calls = 0

        async def failing(number: int) -> kit.workers.Worker:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise OSError("no more processes")
            return await spawn(number)

        supervisor._spawn = failing  # type: ignore[method-assign]
        with pytest.raises(OSError, match="no more processes"):
            await asyncio.wait_for(supervisor.run(), 60)
        (first,) = supervisor.workers
        assert first.code is not None  # stopped, not left running

    asyncio.run(scenario())
