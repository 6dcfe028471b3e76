"""kit.loading.load_service: what `kit run` and `kit replay --shadow` say about a wrong target."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.errors import ConfigError
from kit.loading import load_service
from tests.fixtures import billing


@pytest.fixture
def shipping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module `shipping_app` with two Services, a non-Service, and a private Service."""
    (tmp_path / "shipping_app.py").write_text(
        "from kit import Service\n"
        "service = Service('shipping')\n"
        "returns = Service('returns')\n"
        "_hidden = Service('hidden')\n"
        "nothing = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "shipping_app"
    sys.modules.pop("shipping_app", None)


def test_loads_the_service() -> None:
    assert load_service("tests.fixtures.billing:service") is billing.service


def test_a_missing_attribute_is_named_with_the_services_the_module_has(shipping: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_service(f"{shipping}:servce")
    assert caught.value.setting == "SERVICE"
    assert str(caught.value) == (
        "SERVICE: 'shipping_app:servce': module 'shipping_app' has no attribute 'servce'; "
        "its kit.Services: shipping_app:returns (returns), shipping_app:service (shipping)"
    )


def test_an_attribute_that_is_no_service_says_what_it_is(shipping: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_service(f"{shipping}:nothing")
    assert str(caught.value).startswith(
        "SERVICE: 'shipping_app:nothing' is not a kit.Service (got NoneType); "
        "its kit.Services: shipping_app:returns (returns), "
    )


def test_a_module_without_services_says_so() -> None:
    with pytest.raises(ConfigError) as caught:
        load_service("tests.fixtures.events:svc")
    assert str(caught.value).endswith(
        "module 'tests.fixtures.events' has no attribute 'svc'; "
        "'tests.fixtures.events' has no kit.Service"
    )


@pytest.mark.parametrize(
    "target", ["tests.fixtures.billing", ":service", "tests.fixtures.billing:"]
)
def test_a_target_without_module_and_attribute(target: str) -> None:
    with pytest.raises(ConfigError, match=r"expected module:service, got"):
        load_service(target)


def test_a_module_that_cannot_be_imported() -> None:
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_module_x': No module named"):
        load_service("no_such_module_x:service")
