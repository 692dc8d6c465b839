"""One dispatcher for device requests, whatever the transport.

The MQTT bus (`req/{method}`) and the HTTP API (`POST /api/v1/pos/{device}/{method}`) both
hand it the caller, the method and the raw bytes; it validates the envelope, checks that
this kind of device may call the method, runs the handler once per request id and returns
the reply envelope. A repeated request id gets the very same reply without running the
handler again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import BadRequest, EdgeError, Forbidden
from edge.metrics import Metrics
from edge.protocol import (
    Envelope,
    decode_json,
    now_rfc3339,
    parse_envelope,
    peek_id,
    reply_error,
    reply_ok,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the device's kind and id (from its topic or its HTTP token)."""

    kind: str
    device: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.device}"


Handler = Callable[[Caller, Envelope], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    kinds: frozenset[str]  # device kinds allowed to call it


class ReplyCache:
    """Replies by (device, request id), kept for a while so a repeat gets the same answer."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._items: OrderedDict[tuple[str, str], tuple[float, str, dict[str, Any],
                                                        dict[str, Any]]] = OrderedDict()
        self._inflight: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def claim(self, key: tuple[str, str]) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """The cached (type, data, reply) for `key`, or None after reserving `key` for us.

        A second caller with the same key waits while the first is still running.
        """
        while True:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                    return hit[1], hit[2], hit[3]
                waiting = self._inflight.get(key)
                if waiting is None:
                    self._inflight[key] = threading.Event()
                    return None
            waiting.wait(30)

    def store(self, key: tuple[str, str], type_: str, data: dict[str, Any],
              reply: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), type_, data, reply)
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

    def method(self, name: str, kinds: tuple[str, ...]) -> Callable[[Handler], Handler]:
        """Register a request handler callable by the given device kinds."""

        def register(fn: Handler) -> Handler:
            self.methods[name] = Method(name, fn, frozenset(kinds))
            return fn

        return register

    def event(self, name: str) -> Callable[[Callable[[Caller, Envelope], None]],
                                           Callable[[Caller, Envelope], None]]:
        def register(fn: Callable[[Caller, Envelope], None]) -> Callable[[Caller, Envelope], None]:
            self.events[name] = fn
            return fn

        return register

    def handle_request(self, caller: Caller, method_name: str, payload: bytes) -> dict[str, Any]:
        """Validate and run one request; always returns a reply envelope, never raises."""
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
            outcome = "ok" if reply["ok"] else reply["error"]["code"]
        except EdgeError as exc:
            reply = reply_error(request_id, exc.to_dict())
            outcome = exc.code
            log.info("rejected %s from %s: %s", method_name, caller.key, exc.message)
        self.metrics.requests.labels(method=method_name if method_name in self.methods
                                     else "unknown", outcome=outcome).inc()
        self.metrics.request_seconds.labels(method=method_name if method_name in self.methods
                                            else "unknown").observe(time.perf_counter() - started)
        return reply

    def _run_once(self, caller: Caller, method: Method, envelope: Envelope) -> dict[str, Any]:
        key = (caller.key, envelope.id)
        cached = self.cache.claim(key)
        if cached is not None:
            type_, data, reply = cached
            if type_ != envelope.type or data != envelope.data:
                raise BadRequest("This request id was already used for a different request.",
                                 detail={"reason": "id_reused"})
            self.metrics.repeats.inc()
            return reply
        try:
            reply = reply_ok(envelope.id, method.handler(caller, envelope))
        except EdgeError as exc:
            reply = reply_error(envelope.id, exc.to_dict())
        except BaseException as exc:
            self.cache.release(key)
            if not isinstance(exc, Exception):
                raise
            log.exception("handler %s failed for %s", method.name, caller.key)
            return reply_error(envelope.id, EdgeError().to_dict())  # not cached: a retry may work
        self.cache.store(key, envelope.type, envelope.data, reply)
        return reply

    def handle_event(self, caller: Caller, event_name: str, payload: bytes) -> None:
        """Validate and run one device event; problems are logged and counted, never raised."""
        try:
            envelope = parse_envelope(decode_json(payload), expected_type=event_name)
            handler = self.events.get(event_name)
            if handler is None:
                raise BadRequest(f"Unknown event {event_name!r}.")
            handler(caller, envelope)
            self.metrics.events.labels(type=event_name, outcome="ok").inc()
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
