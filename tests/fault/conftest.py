"""Fixtures of the fault suite: a fleet of `kit run` processes that is always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault.counting import Pipeline, create_topic
from tests.fault.instances import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """The test's `kit run` instances; logs in tmp_path; leftovers killed at teardown."""
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()
        print(f"\ninstance logs: {tmp_path}")
        for exit_ in fleet.exits:
            print(f"  {exit_}")


@pytest.fixture
def pipeline(unique_name: Callable[[str], str], fleet: Fleet) -> Callable[..., Pipeline]:
    """Make the test's topics on `bootstrap` and point the fleet's environment at them.

    pipeline(bootstrap, partitions=3, input_config=None, output_config=None, **env)
    """

    def make(
        bootstrap: str,
        *,
        partitions: int = 3,
        input_config: dict[str, str] | None = None,
        output_config: dict[str, str] | None = None,
        **env: str,
    ) -> Pipeline:
        p = Pipeline(bootstrap, unique_name("in"), unique_name("out"), unique_name("g"))
        create_topic(bootstrap, p.input, partitions, input_config)
        create_topic(bootstrap, p.output, partitions, output_config)
        fleet.env.update(
            KIT_BOOTSTRAP_SERVERS=bootstrap,
            KIT_GROUP_ID=p.group,
            FAULT_INPUT_TOPIC=p.input,
            FAULT_OUTPUT_TOPIC=p.output,
            **env,
        )
        return p

    return make
