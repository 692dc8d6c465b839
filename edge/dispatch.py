"""One dispatcher for device requests, whatever the transport.

The MQTT bus (`req/{method}`) hands it the caller, the method and the raw bytes, and so
will the HTTP route for POS systems that only speak HTTP (`POST /api/v1/pos/{device}/
{method}`, docs/protocol.md §3-§4). It validates the envelope, checks that this kind of device
may call the method, runs the handler once per request id and returns the encoded reply.
A repeated request id gets the very same reply without running the handler again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.metrics import Metrics
from store_contract.errors import BadRequest, EdgeError, Forbidden
from store_contract.protocol import (
    Envelope,
    decode_json,
    encode,
    now_rfc3339,
    parse_envelope,
    peek_id,
    reply_error,
    reply_ok,
)

if TYPE_CHECKING:
    from edge.audit import Actor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the device's kind and id (from its topic or its HTTP token), and
    for the staff checkout page the signed-in staff member (`staff`, an `edge.audit.Actor`)."""

    kind: str
    device: str
    staff: Actor | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.device}"


Handler = Callable[[Caller, Envelope], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    kinds: frozenset[str]  # device kinds allowed to call it


def _fingerprint(type_: str, data: dict[str, Any]) -> str:
    """What a request asked for, to tell a true repeat from an id used twice."""
    return type_ + "\0" + json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Reply:
    """An encoded reply envelope and its outcome (`ok` or the error code)."""

    body: bytes
    outcome: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class ReplyCache:
    """Replies by (device, request id), kept for a while so a repeat gets the same answer.

    Replies are kept encoded: bytes and strings are invisible to Python's garbage collector,
    so a full cache does not lengthen collection pauses on the checkout path.
    """

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._items: OrderedDict[tuple[str, str], tuple[float, str, Reply]] = OrderedDict()
        # Keys being handled now; an Event only once a repeat has to wait for the first.
        self._inflight: dict[tuple[str, str], threading.Event | None] = {}
        self._lock = threading.Lock()

    def claim(self, key: tuple[str, str]) -> tuple[str, Reply] | None:
        """The cached (fingerprint, reply) for `key`, or None after reserving `key` for us.

        A second caller with the same key waits while the first is still running.
        """
        while True:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                    return hit[1], hit[2]
                if key not in self._inflight:
                    self._inflight[key] = None
                    return None
                waiting = self._inflight[key]
                if waiting is None:
                    waiting = self._inflight[key] = threading.Event()
            waiting.wait(30)

    def store(self, key: tuple[str, str], fingerprint: str, reply: Reply) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), fingerprint, reply)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            done = self._inflight.pop(key, None)
        if done is not None:
            done.set()

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            done = self._inflight.pop(key, None)
        if done is not None:
            done.set()

    def prune(self) -> int:
        """Drop expired replies (a scheduled job); returns how many went."""
        cutoff = time.monotonic() - self.ttl_s
        with self._lock:
            stale = [k for k, v in self._items.items() if v[0] < cutoff]
            for k in stale:
                del self._items[k]
        return len(stale)

    def __len__(self) -> int:
        return len(self._items)


class Dispatcher:
    """Method registry plus the request path shared by every transport."""

    def __init__(self, metrics: Metrics, cache: ReplyCache) -> None:
        self.metrics = metrics
        self.cache = cache
        self.methods: dict[str, Method] = {}
        self.events: dict[str, Callable[[Caller, Envelope], None]] = {}
        # Events handled on the bus's network thread as they arrive (see `event`).
        self.inline: frozenset[str] = frozenset()
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}
        self._events_ok: dict[str, Any] = {}

    def method(self, name: str, kinds: tuple[str, ...]) -> Callable[[Handler], Handler]:
        """Register a request handler callable by the given device kinds."""

        def register(fn: Handler) -> Handler:
            self.methods[name] = Method(name, fn, frozenset(kinds))
            return fn

        return register

    def event(self, name: str, *, inline: bool = False
              ) -> Callable[[Callable[[Caller, Envelope], None]],
                            Callable[[Caller, Envelope], None]]:
        """Register an event handler. `inline`: run it on the bus's network thread as the
        event arrives, with no hand-off to a worker and back (two thread switches, most of
        a routed message's time at the edge). Only for a handler that never blocks: no
        write, no network, no wait; it hands anything slower to a worker itself."""
        def register(fn: Callable[[Caller, Envelope], None]) -> Callable[[Caller, Envelope], None]:
            self.events[name] = fn
            if inline:
                self.inline = self.inline | {name}
            return fn

        return register

    def handle_request(self, caller: Caller, method_name: str, payload: bytes) -> Reply:
        """Validate and run one request; always returns an encoded reply, never raises."""
        started = time.perf_counter()
        request_id: str | None = None
        try:
            obj = decode_json(payload)
            request_id = peek_id(obj)
            envelope = parse_envelope(obj, expected_type=method_name)
            method = self.methods.get(method_name)
            if method is None:
                raise BadRequest(f"Unknown method {method_name!r}.",
                                 detail={"method": method_name})
            if caller.kind not in method.kinds:
                raise Forbidden(f"A {caller.kind} device may not call {method_name}.",
                                detail={"method": method_name, "kind": caller.kind})
            reply = self._run_once(caller, method, envelope)
        except EdgeError as exc:
            reply = Reply(encode(reply_error(request_id, exc.to_dict())), exc.code)
            log.info("rejected %s from %s: %s", method_name, caller.key, exc.message)
        self._observe(method_name if method_name in self.methods else "unknown", reply.outcome,
                      time.perf_counter() - started)
        return reply

    def _observe(self, method: str, outcome: str, seconds: float) -> None:
        # Label children are looked up once: labels() costs more than the inc() itself.
        counter = self._counted.get((method, outcome))
        if counter is None:
            counter = self._counted[(method, outcome)] = self.metrics.requests.labels(
                method=method, outcome=outcome)
        timer = self._timed.get(method)
        if timer is None:
            timer = self._timed[method] = self.metrics.request_seconds.labels(method=method)
        counter.inc()
        timer.observe(seconds)

    def _run_once(self, caller: Caller, method: Method, envelope: Envelope) -> Reply:
        key = (caller.key, envelope.id)
        fingerprint = _fingerprint(envelope.type, envelope.data)
        cached = self.cache.claim(key)
        if cached is not None:
            if cached[0] != fingerprint:
                raise BadRequest("This request id was already used for a different request.",
                                 detail={"reason": "id_reused"})
            self.metrics.repeats.inc()
            return cached[1]
        try:
            reply = Reply(encode(reply_ok(envelope.id, method.handler(caller, envelope))), "ok")
        except EdgeError as exc:
            reply = Reply(encode(reply_error(envelope.id, exc.to_dict())), exc.code)
        except BaseException as exc:
            self.cache.release(key)
            if not isinstance(exc, Exception):
                raise
            log.exception("handler %s failed for %s", method.name, caller.key)
            # Not cached: a retry may work.
            return Reply(encode(reply_error(envelope.id, EdgeError().to_dict())), "internal_error")
        self.cache.store(key, fingerprint, reply)
        return reply

    def handle_event(self, caller: Caller, event_name: str, payload: bytes) -> None:
        """Validate and run one device event; problems are logged and counted, never raised."""
        try:
            envelope = parse_envelope(decode_json(payload), expected_type=event_name)
            handler = self.events.get(event_name)
            if handler is None:
                raise BadRequest(f"Unknown event {event_name!r}.")
            handler(caller, envelope)
            ok = self._events_ok.get(event_name)
            if ok is None:  # labels() costs more than inc(): looked up once per event type
                ok = self._events_ok[event_name] = self.metrics.events.labels(
                    type=event_name, outcome="ok")
            ok.inc()
        except EdgeError as exc:
            self.metrics.events.labels(type="unknown" if event_name not in self.events
                                       else event_name, outcome=exc.code).inc()
            log.warning("dropped event %s from %s: %s", event_name, caller.key, exc.message)
        except Exception:
            self.metrics.events.labels(type=event_name, outcome="internal_error").inc()
            log.exception("event handler %s failed for %s", event_name, caller.key)


def register_builtin(dispatcher: Dispatcher) -> None:
    """Methods every device may call."""

    @dispatcher.method("ping", kinds=("pos", "printer", "scanner", "kiosk", "display"))
    def ping(caller: Caller, envelope: Envelope) -> dict[str, Any]:
        echo = envelope.data.get("echo")
        if echo is not None and not isinstance(echo, str | int):
            raise BadRequest('"echo" must be text or a whole number.', detail={"field": "echo"})
        return {"pong": True, "echo": echo, "edge_ts": now_rfc3339()}
