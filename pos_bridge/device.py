"""A device on the store bus: presence with a Last Will, requests to the edge, events, commands.

The lane client, the printer and scanner services and the simulators all build on this.
MQTT 5 devices send a Response Topic and Correlation Data; MQTT 3.1.1 devices get their
replies on their `res` topic and match them by the reply's `re` field.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from store_contract.mqtt import is_refused, make_client, parse_mqtt_url, publish_offline, stop_loop
from store_contract.protocol import (
    Envelope,
    command_topic,
    decode_json,
    encode,
    event_topic,
    new_envelope,
    now_rfc3339,
    reply_topic,
    request_topic,
    status_topic,
)

log = logging.getLogger(__name__)


class DeviceError(Exception):
    """The device could not reach the edge or was refused by the broker."""


class DeviceClient:
    """One device's connection to the store broker."""

    def __init__(self, store: str, kind: str, device_id: str, url: str, username: str,
                 password: str, *, keepalive: int = 30,
                 protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
                 model: str | None = None, sw: str = "pos-bridge/0.1") -> None:
        self.store, self.kind, self.device_id = store, kind, device_id
        self.keepalive = keepalive
        self.protocol = protocol
        self.address = parse_mqtt_url(url)
        self.client = make_client(f"{kind}-{device_id}", self.address, username=username,
                                  password=password, protocol=protocol, max_backoff=5)
        self.status: dict[str, Any] = {"model": model, "sw": sw} if model else {"sw": sw}
        self._status_topic = status_topic(store, kind, device_id)
        self._res_topic = reply_topic(store, kind, device_id)
        self.client.will_set(self._status_topic, encode({"state": "offline", "ts": now_rfc3339()}),
                             qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._answered = threading.Event()  # connected, or refused: either ends connect()
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, list[Any]] = {}  # request id -> [event, reply]
        self.command_handlers: dict[str, Callable[[Envelope], None]] = {}
        self.on_edge_status: Callable[[dict[str, Any]], None] | None = None

    # ------------------------------------------------------------ lifecycle

    def connect(self, timeout: float = 10.0) -> DeviceClient:
        self.client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive)
        self.refused = None
        self._answered.clear()
        self.client.loop_start()
        self._answered.wait(timeout)
        if not self.connected.is_set():
            stop_loop(self.client)
            reason = f"refused: {self.refused}" if self.refused else "no answer"
            raise DeviceError(f"{self.kind} {self.device_id} could not connect to the broker at "
                              f"{self.address.host}:{self.address.port} ({reason})")
        return self

    def close(self) -> None:
        """Leave cleanly: retained offline status, then DISCONNECT (no Last Will)."""
        if self.connected.is_set():
            publish_offline(self.client, self._status_topic)
        self.client.disconnect()
        stop_loop(self.client)

    def set_status(self, **fields: Any) -> None:
        """Change fields of the retained status (e.g. paper="near_end") and republish it."""
        self.status.update(fields)
        if self.connected.is_set():
            self._publish_status()

    def _publish_status(self) -> None:
        body = {"state": "online", "ts": now_rfc3339(), **self.status}
        self.client.publish(self._status_topic, encode(body), qos=1, retain=True)

    # ------------------------------------------------------------ talking to the edge

    def request(self, method: str, data: dict[str, Any] | None = None, *, timeout: float = 5.0,
                request_id: str | None = None) -> dict[str, Any]:
        """Send a request and wait for the edge's reply envelope (ok or error).

        Resending with the same `request_id` is safe: the edge answers it once.
        """
        envelope = new_envelope(method, data)
        if request_id is not None:
            envelope = Envelope(id=request_id, ts=envelope.ts, type=method, data=envelope.data)
        done = threading.Event()
        slot: list[Any] = [done, None]
        with self._lock:
            self._pending[envelope.id] = slot
        props = None
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self._res_topic
            props.CorrelationData = envelope.id.encode()
        try:
            self.client.publish(request_topic(self.store, self.kind, self.device_id, method),
                                envelope.to_json(), qos=1, properties=props)
            if not done.wait(timeout):
                raise TimeoutError(f"no reply to {method} within {timeout:.1f} s")
            reply: dict[str, Any] = slot[1]
            return reply
        finally:
            with self._lock:
                self._pending.pop(envelope.id, None)

    def publish_raw(self, method: str, payload: bytes) -> None:
        """Publish arbitrary bytes as a request (for tests of the edge's validation)."""
        self.client.publish(request_topic(self.store, self.kind, self.device_id, method),
                            payload, qos=1)

    def event(self, type_: str, data: dict[str, Any]) -> None:
        self.client.publish(event_topic(self.store, self.kind, self.device_id, type_),
                            new_envelope(type_, data).to_json(), qos=1)

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason_code: Any,
                    _p: Any) -> None:
        if reason_code.is_failure:
            if is_refused(reason_code):
                self.refused = str(reason_code)
                client.disconnect()
                self._answered.set()
            return
        client.subscribe([(self._res_topic, 1),
                          (command_topic(self.store, self.kind, self.device_id, "+"), 1),
                          (f"store/{self.store}/edge/status", 1)])
        self._publish_status()
        self.connected.set()
        self._answered.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = decode_json(msg.payload)
        except Exception:
            log.warning("%s/%s: unreadable message on %s", self.kind, self.device_id, msg.topic)
            return
        if msg.topic == self._res_topic and isinstance(body, dict):
            correlation = getattr(getattr(msg, "properties", None), "CorrelationData", None)
            key = correlation.decode() if correlation else body.get("re")
            with self._lock:
                slot = self._pending.get(key) if isinstance(key, str) else None
            if slot is not None:
                slot[1] = body
                slot[0].set()
        elif msg.topic.endswith("/edge/status") and isinstance(body, dict):
            if self.on_edge_status is not None:
                self.on_edge_status(body)
        elif "/cmd/" in msg.topic and isinstance(body, dict):
            handler = self.command_handlers.get(msg.topic.rsplit("/", 1)[1])
            if handler is not None:
                handler(Envelope(id=str(body.get("id")), ts=str(body.get("ts")),
                                 type=str(body.get("type")), data=body.get("data") or {}))


def connect_until(device: DeviceClient, stop: threading.Event) -> bool:
    """Connect `device`, trying again (1 s, doubling to 30 s) while the broker cannot be
    reached, until `stop` is set. True once connected; False when stopped first. A broker
    that refuses the login raises DeviceError: a service stops then, as retrying cannot
    help."""
    delay = 1.0
    while not stop.is_set():
        try:
            device.connect(timeout=10)
            return True
        except DeviceError as exc:
            if device.refused:
                raise
            log.warning("%s; retrying in %.0f s", exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
    return False
