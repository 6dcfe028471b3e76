"""Service declarations: what a decorator records, and the mistakes it refuses at import."""

from __future__ import annotations

import re

import pytest

from kit import ConfigError, Context, Event, KitError, Service
from kit.service import Handler, Responder
from tests.fixtures import SCHEMAS
from tests.fixtures.events import CheckStock, InvoiceIssued, OrderLine, OrderPlaced, StockLevel


def test_a_handler_is_declared_on_its_event_schemas_topic_with_no_io() -> None:
    svc = Service("billing", version="1.2.0")

    @svc.handler()
    async def on_order(order: OrderPlaced, ctx: Context) -> None:
        pass

    (h,) = svc.handlers
    assert type(h) is Handler
    assert h.topic == h.schema_name == "shop.OrderPlaced"
    assert (h.event_type, h.name, h.func) == (OrderPlaced, "on_order", on_order)
    assert h.takes_context and h.is_async
    assert (h.retries, h.dead_letter_topic, h.partitions, h.transient_timeout) == (None,) * 4
    assert svc.topics() == ["shop.OrderPlaced"] and svc.responders() == []


def test_the_decorator_returns_the_function_unchanged() -> None:
    svc = Service("billing")

    @svc.handler()
    def on_invoice(invoice: InvoiceIssued) -> str:
        return invoice.invoice_id

    assert on_invoice.__name__ == "on_invoice"
    assert on_invoice(InvoiceIssued.model_construct(invoice_id="inv-1")) == "inv-1"
    (h,) = svc.handlers
    assert not h.takes_context and not h.is_async


def test_handler_options_are_kept_and_the_topic_can_be_named() -> None:
    svc = Service("billing")

    @svc.handler(
        "orders.v2", retries=7, dead_letter_topic="orders.failed", partitions=6, transient_timeout=0
    )
    async def on_order(order: OrderPlaced) -> None:
        pass

    (h,) = svc.handlers
    assert h.topic == "orders.v2" and h.schema_name == "shop.OrderPlaced"
    assert (h.retries, h.dead_letter_topic, h.partitions, h.transient_timeout) == (
        7,
        "orders.failed",
        6,
        0,
    )


def test_a_responder_is_addressed_as_service_dot_function_and_fails_fast_by_default() -> None:
    svc = Service("stockroom")

    @svc.responder()
    async def check_stock(request: CheckStock, ctx: Context) -> StockLevel:
        raise NotImplementedError

    (r,) = svc.handlers
    assert isinstance(r, Responder) and svc.responders() == [r]
    assert r.topic == "stockroom.check_stock"
    assert (r.event_type, r.reply_type, r.takes_context) == (CheckStock, StockLevel, True)
    assert (r.retries, r.transient_timeout) == (0, 0)  # the caller's deadline is running
    assert check_stock.__kit_responder__ == ("stockroom", r)  # callers find it by the function


def test_topics_are_listed_in_declaration_order() -> None:
    svc = Service("shop")

    @svc.handler()
    async def on_invoice(invoice: InvoiceIssued) -> None:
        pass

    @svc.responder("stock.requests", retries=2, transient_timeout=5.0)
    def check(request: CheckStock) -> StockLevel:
        raise NotImplementedError

    @svc.handler()
    async def on_order(order: OrderPlaced) -> None:
        pass

    assert svc.topics() == ["billing.InvoiceIssued", "stock.requests", "shop.OrderPlaced"]
    assert [r.name for r in svc.responders()] == ["check"]
    assert (svc.responders()[0].retries, svc.responders()[0].transient_timeout) == (2, 5.0)


def test_the_consumer_group_defaults_to_the_service_name() -> None:
    assert Service("billing").group == "billing"
    assert Service("billing", group_id="billing-blue").group == "billing-blue"


def test_events_defined_in_a_function_can_be_annotated() -> None:
    class LocalStock(Event, schema="inventory.CheckStock", repository=SCHEMAS):
        sku: str
        quantity: int
        request_id: str | None = None

    svc = Service("stockroom")

    @svc.handler(topic="local")
    async def on_stock(request: LocalStock) -> None:
        pass

    assert svc.handlers[0].event_type is LocalStock


# --- declaration errors -------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "bill ing", "billing\n"])
def test_a_service_name_must_be_a_word(name) -> None:
    with pytest.raises(ConfigError, match=r"Service\.name"):
        Service(name)


def declare(svc: Service, func, **options) -> None:
    svc.handler(**options)(func)


async def no_parameters() -> None:
    pass


async def three_parameters(order: OrderPlaced, ctx: Context, extra: int) -> None:
    pass


async def not_annotated(order, ctx: Context) -> None:
    pass


async def annotated_with_a_str(order: str) -> None:
    pass


async def annotated_with_a_model_that_is_no_event(line: dict) -> None:
    pass


async def annotated_with_an_unknown_name(order: Missing) -> None:  # noqa: F821
    pass


@pytest.mark.parametrize(
    ("func", "problem"),
    [
        (no_parameters, "takes (event) or (event, ctx)"),
        (three_parameters, "takes (event) or (event, ctx)"),
        (not_annotated, "'order' must be annotated with an Event type"),
        (annotated_with_a_str, "'order' must be annotated with an Event type"),
        (annotated_with_a_model_that_is_no_event, "'line' must be annotated with an Event type"),
        (annotated_with_an_unknown_name, "cannot resolve an annotation"),
    ],
)
def test_a_handler_with_a_wrong_signature_is_refused_naming_it(func, problem) -> None:
    svc = Service("billing")
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        declare(svc, func)
    assert caught.value.setting == func.__qualname__
    assert svc.handlers == []  # nothing half-declared


def test_a_handler_of_an_event_without_a_schema_is_a_declaration_error() -> None:
    # OrderLine is a nested record type, bound to no schema: there is no topic to read.
    svc = Service("billing")

    async def on_line(line: OrderLine) -> None:
        pass

    with pytest.raises(ConfigError, match="on_line") as caught:
        declare(svc, on_line)
    assert isinstance(caught.value, KitError) and svc.handlers == []


def test_a_responder_replying_with_an_event_without_a_schema_is_a_declaration_error() -> None:
    svc = Service("stockroom")

    async def check_stock(request: CheckStock) -> OrderLine:
        raise NotImplementedError

    with pytest.raises(ConfigError, match="check_stock"):
        svc.responder()(check_stock)
    assert svc.handlers == []


def test_two_handlers_on_one_topic_are_refused_naming_both() -> None:
    svc = Service("billing")

    @svc.handler()
    async def first(order: OrderPlaced) -> None:
        pass

    async def second(order: InvoiceIssued) -> None:
        pass

    with pytest.raises(ConfigError, match=r"'shop\.OrderPlaced' already has handler 'first'") as e:
        declare(svc, second, topic="shop.OrderPlaced")
    assert e.value.setting == "billing.second"
    assert [h.name for h in svc.handlers] == ["first"]


def test_a_responder_and_a_handler_cannot_share_a_topic() -> None:
    svc = Service("stockroom")

    @svc.handler(topic="stockroom.check_stock")
    async def audit(request: CheckStock) -> None:
        pass

    with pytest.raises(ConfigError, match="already has handler 'audit'"):

        @svc.responder()
        async def check_stock(request: CheckStock) -> StockLevel:
            raise NotImplementedError

    assert len(svc.handlers) == 1


def test_the_same_handler_in_two_services_is_fine() -> None:
    one, two = Service("one"), Service("two")

    async def on_order(order: OrderPlaced) -> None:
        pass

    declare(one, on_order)
    declare(two, on_order)
    assert one.topics() == two.topics() == ["shop.OrderPlaced"]


async def returns_nothing_declared(request: CheckStock):
    raise NotImplementedError


async def returns_none(request: CheckStock) -> None:
    raise NotImplementedError


async def returns_a_dict(request: CheckStock) -> dict:
    raise NotImplementedError


async def returns_an_optional_event(request: CheckStock) -> StockLevel | None:
    raise NotImplementedError


@pytest.mark.parametrize(
    "func", [returns_nothing_declared, returns_none, returns_a_dict, returns_an_optional_event]
)
def test_a_responder_must_be_annotated_to_return_an_event(func) -> None:
    svc = Service("stockroom")
    with pytest.raises(ConfigError, match="must be annotated to return an Event") as caught:
        svc.responder()(func)
    assert caught.value.setting == f"stockroom.{func.__name__}"
    assert svc.handlers == [] and not hasattr(func, "__kit_responder__")


def test_a_responder_with_a_wrong_request_parameter_is_refused() -> None:
    svc = Service("stockroom")

    async def check(request: str) -> StockLevel:
        raise NotImplementedError

    with pytest.raises(ConfigError, match="must be annotated with an Event type"):
        svc.responder()(check)


@pytest.mark.parametrize("value", [-1, -0.001])
@pytest.mark.parametrize("kind", ["handler", "responder"])
def test_a_negative_transient_timeout_is_refused_when_declared(kind, value) -> None:
    svc = Service("stockroom")

    async def check_stock(request: CheckStock) -> StockLevel:
        raise NotImplementedError

    with pytest.raises(ConfigError, match=f"must be >= 0, got {value}") as caught:
        getattr(svc, kind)(transient_timeout=value)(check_stock)
    assert caught.value.setting == "transient_timeout"
    assert svc.handlers == []


def test_a_zero_transient_timeout_is_allowed() -> None:
    svc = Service("billing")

    @svc.handler(transient_timeout=0)
    async def on_order(order: OrderPlaced) -> None:
        pass

    assert svc.handlers[0].transient_timeout == 0
