"""The request-reply protocol without a broker: headers, targets, replies and remote errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kit import (
    Codec,
    ConfigError,
    RemoteError,
    RequestError,
    SchemaRepository,
    Service,
    load_settings,
)
from kit.context import Ticket
from kit.dispatch import Dispatcher
from kit.rpc import (
    BaseRequester,
    check_reply,
    reply_topic_name,
    request_headers,
    resolve_target,
)
from kit.transport.memory import MemoryBroker, MemoryMessage
from tests.fixtures import SCHEMAS
from tests.fixtures.events import CheckStock, OrderPlaced, StockLevel

CODEC = Codec(SchemaRepository(SCHEMAS))

stockroom = Service("stockroom")


@stockroom.responder()
async def check_stock(request: CheckStock) -> StockLevel:
    if request.sku != "tea":
        raise KeyError(f"unknown sku {request.sku!r}")
    return StockLevel(sku="tea", available=100, enough=request.quantity <= 100)


@stockroom.responder("stock.reserve.v2")
async def reserve(request: CheckStock) -> StockLevel:
    raise PermissionError("reservations are closed")


def reply(*headers: tuple[str, bytes], value: bytes | None = None) -> MemoryMessage:
    return MemoryBroker().append("_kit.replies.me", value, None, list(headers))


# --- request headers and reply topics ----------------------------------------------------


def test_request_headers_say_who_asks_where_to_reply_and_by_when() -> None:
    assert request_headers("c-1", "_kit.replies.i-1", 1_767_225_600_123, "stockroom", "check") == [
        ("kit-correlation-id", b"c-1"),
        ("kit-reply-to", b"_kit.replies.i-1"),
        ("kit-deadline", b"1767225600123"),
        ("kit-method", b"stockroom.check"),
    ]


def test_each_requesting_instance_has_its_own_reply_topic() -> None:
    assert reply_topic_name("orders-7f3a") == "_kit.replies.orders-7f3a"
    assert reply_topic_name("a") != reply_topic_name("b")


# --- replies and remote errors ---------------------------------------------------------------


def test_a_reply_without_an_error_is_returned_as_it_is() -> None:
    ok = reply(("kit-correlation-id", b"c-1"), value=b"bytes")
    assert check_reply(ok, "stockroom", "check_stock", "c-1") is ok


def test_an_error_reply_raises_remote_error_with_type_message_and_traceback() -> None:
    failed = reply(
        ("kit-correlation-id", b"c-1"),
        ("kit-error", b"KeyError"),
        ("kit-error-message", b"\"unknown sku 'x'\""),
        ("kit-error-trace", b"Traceback (most recent call last):\n  ...\nKeyError: 'x'\n"),
    )
    with pytest.raises(RemoteError) as caught:
        check_reply(failed, "stockroom", "check_stock", "c-1")
    err = caught.value
    assert isinstance(err, RequestError)
    assert (err.service, err.method, err.correlation_id) == ("stockroom", "check_stock", "c-1")
    assert (err.error_type, err.message) == ("KeyError", "\"unknown sku 'x'\"")
    assert err.remote_traceback.endswith("KeyError: 'x'\n")
    assert str(err) == "stockroom.check_stock raised KeyError: \"unknown sku 'x'\""


def test_an_error_reply_without_message_or_traceback_still_raises() -> None:
    with pytest.raises(RemoteError) as caught:
        check_reply(reply(("kit-error", b"DecodeError")), "stockroom", "check_stock", "c-2")
    assert (caught.value.error_type, caught.value.message) == ("DecodeError", "")
    assert caught.value.remote_traceback is None


def test_an_error_message_that_is_not_utf8_is_still_readable() -> None:
    bad = reply(("kit-error", b"ValueError"), ("kit-error-message", b"caf\xe9"))
    with pytest.raises(RemoteError) as caught:
        check_reply(bad, "stockroom", "check_stock", "c-3")
    assert caught.value.message == "caf\ufffd"


# --- targets ---------------------------------------------------------------------------------


def test_a_responder_function_names_its_service_method_topic_and_reply() -> None:
    assert resolve_target(check_stock, None) == (
        "stockroom",
        "check_stock",
        "stockroom.check_stock",
        StockLevel,
    )
    assert resolve_target(reserve, None) == ("stockroom", "reserve", "stock.reserve.v2", StockLevel)


def test_reply_given_with_a_responder_function_wins() -> None:
    class NewerLevel(StockLevel):
        pass

    assert resolve_target(check_stock, NewerLevel)[3] is NewerLevel


def test_a_service_method_string_needs_the_reply_class() -> None:
    assert resolve_target("stockroom.check_stock", StockLevel) == (
        "stockroom",
        "check_stock",
        None,  # the request topic is then <service>.<method>
        StockLevel,
    )
    assert resolve_target("shop.stockroom.check", StockLevel)[:2] == ("shop.stockroom", "check")
    with pytest.raises(ConfigError, match="reply=<the reply Event class>") as caught:
        resolve_target("stockroom.check_stock", None)
    assert caught.value.setting == "reply"


async def plain_handler(order: OrderPlaced) -> None:
    pass


@pytest.mark.parametrize("target", ["check_stock", "", plain_handler, 42, None])
def test_a_target_that_is_neither_a_responder_nor_service_dot_method_is_refused(target) -> None:
    with pytest.raises(ConfigError, match=r"expected a responder or 'service\.method'") as caught:
        resolve_target(target, StockLevel)
    assert caught.value.setting == "target"


# --- the typed API over a transport, end to end through a dispatcher ---------------------------


class MemoryRequester(BaseRequester):
    """request_raw on the memory transport: the request record goes through the responder's
    Dispatcher, and the reply is read back from the reply topic."""

    def __init__(self, service: Service, **settings: Any) -> None:
        self.codec = CODEC
        self.broker = MemoryBroker()
        self.settings = load_settings({}, bootstrap_servers="memory", **settings)
        self.dispatcher = Dispatcher(service, CODEC, self.settings, self.broker.sink(service.name))
        self.sent: list[MemoryMessage] = []

    async def request_raw(
        self, service, method, value, *, topic=None, key=None, timeout=None, started=None
    ):
        corr = f"c-{len(self.sent) + 1}"
        deadline = int((time.time() + (timeout or 10.0)) * 1000)
        headers = request_headers(corr, "_kit.replies.me", deadline, service, method)
        msg = self.broker.append(topic or f"{service}.{method}", value, key, headers)
        self.sent.append(msg)
        await self.dispatcher.handle_batch([msg], Ticket())
        await asyncio.sleep(0)  # replies go out at the end of the loop turn (TurnBatch)
        answer = [m for m in self.broker.log if m.topic() == "_kit.replies.me"][-1]
        assert answer.headers()[0] == ("kit-correlation-id", corr.encode())
        return check_reply(answer, service, method, corr)


def test_a_request_to_a_responder_function_returns_the_typed_reply() -> None:
    requester = MemoryRequester(stockroom)
    level = asyncio.run(requester.request(check_stock, CheckStock(sku="tea", quantity=3), key="k"))
    assert level == StockLevel(sku="tea", available=100, enough=True)
    (sent,) = requester.sent
    assert sent.topic() == "stockroom.check_stock" and sent.key() == b"k"
    assert CODEC.decode(sent.value(), CheckStock) == CheckStock(sku="tea", quantity=3)
    assert dict(sent.headers())["kit-method"] == b"stockroom.check_stock"


def test_a_request_by_name_goes_to_the_service_dot_method_topic() -> None:
    requester = MemoryRequester(stockroom)
    level = asyncio.run(
        requester.request(
            "stockroom.check_stock", CheckStock(sku="tea", quantity=500), reply=StockLevel
        )
    )
    assert isinstance(level, StockLevel) and level.enough is False
    assert requester.sent[0].topic() == "stockroom.check_stock"


def test_a_responder_on_its_own_topic_is_reached_through_its_function() -> None:
    requester = MemoryRequester(stockroom)
    with pytest.raises(RemoteError, match="PermissionError: reservations are closed"):
        asyncio.run(requester.request(reserve, CheckStock(sku="tea", quantity=1)))
    assert requester.sent[0].topic() == "stock.reserve.v2"


@pytest.mark.parametrize("tracebacks", [False, True])
def test_a_responder_that_raises_is_a_remote_error_for_its_caller(tracebacks) -> None:
    requester = MemoryRequester(stockroom, remote_tracebacks=tracebacks)
    with pytest.raises(RemoteError) as caught:
        asyncio.run(requester.request(check_stock, CheckStock(sku="caviar", quantity=1)))
    err = caught.value
    assert (err.service, err.method, err.correlation_id) == ("stockroom", "check_stock", "c-1")
    assert (err.error_type, err.message) == ("KeyError", "\"unknown sku 'caviar'\"")
    if tracebacks:
        assert "in check_stock" in err.remote_traceback
        assert err.remote_traceback.rstrip().endswith("KeyError: \"unknown sku 'caviar'\"")
    else:
        assert err.remote_traceback is None


def test_a_request_the_responder_cannot_decode_is_a_remote_decode_error() -> None:
    requester = MemoryRequester(stockroom)
    with pytest.raises(RemoteError) as caught:
        asyncio.run(requester.request_raw("stockroom", "check_stock", b"not avro"))
    assert caught.value.error_type == "DecodeError"
