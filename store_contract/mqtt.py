"""How every client of the store broker is built: paho-mqtt 2.x, TCP_NODELAY, capped backoff.

Without TCP_NODELAY a QoS 1 request/response waits on Nagle + delayed ACK (40-90 ms);
with it the round trip on a store LAN is well under a millisecond.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt

# CONNACK reason codes that mean "your credentials are wrong": retrying cannot help.
REFUSED_CODES = frozenset({4, 5, 134, 135, 138})


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_file: str | None = None  # mqtts: the CA to verify the broker with; None = the system's


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://user:pass@host:1883` or `mqtts://user:pass@host:8883?cafile=/path/ca.crt` into
    its parts (the port has a default)."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    ca_files = parse_qs(parts.query).get("cafile")
    return BrokerAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca_file=ca_files[-1] if ca_files else None,
    )


def _nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails: paho drops such a socket without closing it,
    one descriptor per reconnect try against a broker whose certificate is refused."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS 1.2+; the broker's certificate must chain to `ca_file` (the store's CA; None = the
    system's CAs) and name the host that was dialled."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosingSSLSocket
    return context


def make_client(client_id: str, address: BrokerAddress, *, username: str | None = None,
                password: str | None = None,
                protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
                max_backoff: float = 30.0) -> mqtt.Client:
    """A paho client with TCP_NODELAY, credentials, TLS when asked and capped reconnect backoff.

    Callers set their Last Will before connecting and restore subscriptions in on_connect.
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=protocol)
    client.on_socket_open = _nodelay
    user = username if username is not None else address.username
    if user is not None:
        client.username_pw_set(user, password if password is not None else address.password)
    if address.tls:
        client.tls_set_context(tls_context(address.ca_file))
    client.reconnect_delay_set(min_delay=1, max_delay=int(max_backoff))
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(10000)
    return client


def stop_loop(client: mqtt.Client) -> None:
    """Stop the client's network thread and close its sockets now.

    paho opens a fresh socket pair (to wake its loop) at every `loop_start` and closes it only
    in `Client.__del__`. A client held in a reference cycle (callbacks bound to their owner)
    then keeps two descriptors until a garbage collection, which may finalise the sockets
    before the client and warn `ResourceWarning: unclosed socket`. Call this from outside the
    network thread; the client may be started again afterwards.
    """
    client.loop_stop()
    client._reset_sockets()  # private, but the only way short of reinitialise()


def publish_offline(client: mqtt.Client, topic: str, timeout: float = 2.0) -> None:
    """Leave cleanly: set the retained status to offline and wait (briefly) for the broker."""
    from store_contract.protocol import encode, now_rfc3339

    info = client.publish(topic, encode({"state": "offline", "ts": now_rfc3339()}), qos=1,
                          retain=True)
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)


def is_refused(reason_code: Any) -> bool:
    """True when a CONNACK says the credentials are wrong or not authorised."""
    value = getattr(reason_code, "value", reason_code)
    return isinstance(value, int) and value in REFUSED_CODES
