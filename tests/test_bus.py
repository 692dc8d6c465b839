"""Request/response over the real broker: replies, idempotency, bad input and isolation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.app.service import EdgeService
from edge.dispatch import Caller
from pos_bridge.device import DeviceClient
from store_contract.errors import EdgeError
from store_contract.protocol import Envelope, new_envelope, uuid7
from tests.conftest import subscribed, wait_until

DeviceFactory = Callable[..., DeviceClient]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_ping_is_answered_over_both_mqtt_versions(edge: EdgeService, device: DeviceFactory,
                                                   protocol: int) -> None:
    lane = device("pos", "lane-1", protocol=protocol)
    reply = lane.request("ping", {"echo": "hello"})
    assert reply["ok"] is True
    assert reply["data"]["echo"] == "hello" and reply["data"]["pong"] is True


def test_mqtt5_correlation_data_is_echoed(edge: EdgeService, device: DeviceFactory,
                                          settings: Any) -> None:
    lane = device("pos", "lane-1")
    got: list[mqtt.MQTTMessage] = []
    lane.client.message_callback_add(f"store/{settings.store_id}/pos/lane-1/res/mine",
                                     lambda _c, _u, m: got.append(m))
    granted = subscribed(lane.client, f"store/{settings.store_id}/pos/lane-1/res/mine")
    assert not granted[0].is_failure
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"store/{settings.store_id}/pos/lane-1/res/mine"
    props.CorrelationData = b"\x00corr-42"
    lane.client.publish(f"store/{settings.store_id}/pos/lane-1/req/ping",
                        new_envelope("ping").to_json(), qos=1, properties=props)
    assert wait_until(lambda: got, 5)
    assert got[0].properties.CorrelationData == b"\x00corr-42"
    assert json.loads(got[0].payload)["ok"] is True


def test_response_topic_outside_the_devices_own_tree_is_not_used(
        edge: EdgeService, device: DeviceFactory, settings: Any) -> None:
    lane = device("pos", "lane-1")
    victim = device("printer", "printer-1")
    printed: list[Any] = []
    victim.command_handlers["print"] = printed.append
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"store/{settings.store_id}/printer/printer-1/cmd/print"
    env = new_envelope("ping")
    props.CorrelationData = env.id.encode()
    seen: list[dict[str, Any]] = []
    lane.client.message_callback_add(f"store/{settings.store_id}/pos/lane-1/res",
                                     lambda _c, _u, m: seen.append(json.loads(m.payload)))
    lane.client.publish(f"store/{settings.store_id}/pos/lane-1/req/ping", env.to_json(), qos=1,
                        properties=props)
    assert wait_until(lambda: seen, 5), "the reply should come on the lane's own res topic"
    # A barrier, not a wait: the edge answers the victim's own ping after the lane's, on the
    # same connection, so anything it had sent the victim before has arrived by then.
    assert victim.request("ping", timeout=5)["ok"]
    assert printed == []


def test_repeated_request_id_gets_the_same_reply_and_runs_once(edge: EdgeService,
                                                               device: DeviceFactory) -> None:
    calls: list[str] = []

    @edge.dispatcher.method("test.count", kinds=("pos",))
    def count(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        calls.append(envelope.id)
        return {"n": len(calls)}

    lane = device("pos", "lane-1")
    rid = uuid7()
    first = lane.request("test.count", {"a": 1}, request_id=rid)
    second = lane.request("test.count", {"a": 1}, request_id=rid)
    assert first == second and first["data"] == {"n": 1}
    assert calls == [rid]
    other = lane.request("test.count", {"a": 1})
    assert other["data"] == {"n": 2}
    reused = lane.request("test.count", {"a": 2}, request_id=rid)
    assert reused["ok"] is False and reused["error"]["detail"]["reason"] == "id_reused"


def test_domain_errors_are_replied_and_repeated_identically(edge: EdgeService,
                                                            device: DeviceFactory) -> None:
    @edge.dispatcher.method("test.refuse", kinds=("pos",))
    def refuse(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        raise EdgeError("Coupon already used.", code="coupon_used", status=409)

    lane = device("pos", "lane-1")
    rid = uuid7()
    a = lane.request("test.refuse", request_id=rid)
    b = lane.request("test.refuse", request_id=rid)
    assert a == b
    assert a["ok"] is False and a["error"] == {"code": "coupon_used",
                                               "message": "Coupon already used."}


def test_a_crashing_handler_gets_an_error_reply_and_the_edge_keeps_serving(
        edge: EdgeService, device: DeviceFactory) -> None:
    @edge.dispatcher.method("test.crash", kinds=("pos",))
    def crash(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        raise RuntimeError("bug")

    lane = device("pos", "lane-1")
    reply = lane.request("test.crash")
    assert reply["ok"] is False and reply["error"]["code"] == "internal_error"
    assert lane.request("ping")["ok"] is True


def test_inline_events_run_on_the_network_thread_and_one_that_crashes_stops_nothing(
        edge: EdgeService, device: DeviceFactory) -> None:
    ran: list[tuple[str, Any]] = []
    worker: list[str] = []

    @edge.dispatcher.event("test.inline", inline=True)
    def inline(caller: Caller, envelope: Envelope) -> None:
        ran.append((threading.current_thread().name, envelope.data.get("n")))
        if envelope.data.get("crash"):
            raise RuntimeError("bug")

    @edge.dispatcher.event("test.queued")
    def queued(caller: Caller, envelope: Envelope) -> None:
        worker.append(threading.current_thread().name)

    lane = device("pos", "lane-1")
    lane.event("test.inline", {"n": 1, "crash": True})
    lane.event("test.inline", {"n": 2})
    lane.event("test.queued", {})
    assert wait_until(lambda: len(ran) == 2 and worker, 5)
    # paho's network thread, not one of the bus's workers (which run the others)
    assert {name for name, _ in ran} == {edge.bus.client._thread.name}
    assert [n for _, n in ran] == [1, 2] and worker[0].startswith("bus-")
    assert lane.request("ping")["ok"] is True
    assert edge.metrics.registry.get_sample_value(
        "edge_device_events_total", {"type": "test.inline", "outcome": "internal_error"}) == 1


def _raw_reply(lane: DeviceClient, method: str, payload: bytes) -> dict[str, Any]:
    got: list[dict[str, Any]] = []
    lane.client.message_callback_add(lane._res_topic,
                                     lambda _c, _u, m: got.append(json.loads(m.payload)))
    try:
        lane.publish_raw(method, payload)
        assert wait_until(lambda: got, 5), f"no reply to {payload[:40]!r}"
        return got[0]
    finally:
        lane.client.message_callback_remove(lane._res_topic)


@pytest.mark.parametrize(("method", "payload", "words"), [
    ("ping", b"this is not json", "not valid JSON"),
    ("ping", b"\xc3\x28", "not UTF-8"),
    ("ping", b"[" + b"1," * 40000 + b"1]", "too large"),
    ("ping", b'{"v":1,"id":42,"ts":"2026-11-22T10:00:00.000Z","type":"ping","data":{}}', "UUID"),
    ("ping", json.dumps({"v": 1, "id": uuid7(), "ts": "2026-11-22T10:00:00.000Z",
                         "type": "ping", "data": "text"}).encode(), "JSON object"),
    ("ping", json.dumps({"v": 1, "id": uuid7(), "ts": "2026-11-22T10:00:00.000Z",
                         "type": "ping", "data": {"echo": [1]}}).encode(), "echo"),
    ("no.such.method", new_envelope("no.such.method").to_json(), "Unknown method"),
])
def test_bad_messages_get_bad_request_and_others_keep_being_served(
        edge: EdgeService, device: DeviceFactory, method: str, payload: bytes,
        words: str) -> None:
    bad = device("pos", "lane-bad", protocol=mqtt.MQTTv311)
    good = device("pos", "lane-good")
    reply = _raw_reply(bad, method, payload)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request"
    assert words in reply["error"]["message"]
    assert good.request("ping")["ok"] is True
    assert bad.request("ping")["ok"] is True


def test_a_device_kind_cannot_call_a_method_it_may_not(edge: EdgeService,
                                                       device: DeviceFactory) -> None:
    @edge.dispatcher.method("test.pos_only", kinds=("pos",))
    def pos_only(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        return {}

    # The broker only lets a kiosk publish req/ping; the edge refuses the rest on its own too.
    reply = json.loads(edge.dispatcher.handle_request(
        Caller("kiosk", "kiosk-1"), "test.pos_only", new_envelope("test.pos_only").to_json()).body)
    assert reply["ok"] is False and reply["error"]["code"] == "forbidden"


def test_a_flooding_device_does_not_block_other_lanes(edge: EdgeService,
                                                      device: DeviceFactory) -> None:
    release = threading.Event()

    @edge.dispatcher.method("test.slow", kinds=("pos",))
    def slow(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        release.wait(10)
        return {}

    flood = device("pos", "lane-flood")
    other = device("pos", "lane-ok")
    for _ in range(2000):  # far more than the backlog: the extra ones are dropped
        flood.publish_raw("test.slow", new_envelope("test.slow").to_json())
    # The flood has reached the edge: the flooding lane's backlog is full.
    backlog = edge.settings.bus_device_backlog
    assert wait_until(lambda: edge.bus.executor.depth() >= backlog, 10), \
        edge.bus.executor.depth()
    started = time.monotonic()
    assert other.request("ping", timeout=5)["ok"] is True
    assert time.monotonic() - started < 5
    assert edge.bus.executor.depth() <= edge.settings.bus_device_backlog + 1
    release.set()


def test_messages_from_one_device_are_handled_in_order(edge: EdgeService,
                                                       device: DeviceFactory) -> None:
    seen: list[int] = []
    active = threading.Semaphore(1)
    overlapped: list[bool] = []

    @edge.dispatcher.method("test.seq", kinds=("pos",))
    def seq(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        if not active.acquire(blocking=False):
            overlapped.append(True)
            return {}
        try:
            time.sleep(0.001)
            seen.append(envelope.data["n"])
        finally:
            active.release()
        return {}

    lane = device("pos", "lane-1")
    for n in range(200):
        lane.client.publish(f"store/{edge.settings.store_id}/pos/lane-1/req/test.seq",
                            new_envelope("test.seq", {"n": n}).to_json(), qos=1)
    assert wait_until(lambda: len(seen) == 200, 15)
    assert seen == list(range(200))
    assert not overlapped
