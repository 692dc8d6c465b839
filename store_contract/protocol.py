"""The MQTT wire contract (docs/protocol.md): ids, timestamps, topics and envelopes.

Shared by the edge and by `pos_bridge` so both ends speak exactly the same envelope.
Everything that arrives is validated here, before it reaches the domain.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from store_contract.errors import BadRequest

MAX_ENVELOPE_BYTES = 64 * 1024
DEVICE_KINDS = ("pos", "printer", "scanner", "kiosk", "display")
ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,31}"
ID_RE = re.compile(rf"^{ID_PATTERN}\Z")
METHOD_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\Z")
_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z"
)

_uuid_lock = threading.Lock()
_random = random.Random(os.urandom(32))
# A forked child must not repeat its parent's ids.
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))
_uuid_last = [0, 0]  # last millisecond, last 12-bit counter


def uuid7() -> str:
    """A UUIDv7 (RFC 9562) string: 48-bit Unix milliseconds, then random bits.

    Within one millisecond a 12-bit counter keeps ids from this process increasing. Ids
    name messages and records; they are not secrets, so a seeded PRNG is random enough and
    spares the checkout path a system call per id.
    """
    with _uuid_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _uuid_last[0]:
            ms = _uuid_last[0]
            _uuid_last[1] += 1
            if _uuid_last[1] > 0xFFF:
                ms += 1
                _uuid_last[1] = 0
        else:
            _uuid_last[1] = _random.getrandbits(10)
        _uuid_last[0] = ms
        seq = _uuid_last[1]
        rand = _random.getrandbits(62)
    h = "%032x" % ((ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_rfc3339() -> str:
    """The current time as RFC 3339 UTC with milliseconds, e.g. 2026-11-22T14:03:05.120Z."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: Any) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; raises ValueError otherwise."""
    if not isinstance(text, str) or not _RFC3339_RE.match(text):
        raise ValueError("not an RFC 3339 timestamp with a time zone")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def is_uuid(text: Any) -> bool:
    """A UUID in its canonical lower-case form (UUIDv7 recommended, any version accepted)."""
    return isinstance(text, str) and _UUID_RE.match(text) is not None


# ---------------------------------------------------------------- topics


def device_topic(store: str, kind: str, device: str) -> str:
    return f"store/{store}/{kind}/{device}"


def status_topic(store: str, kind: str, device: str) -> str:
    return f"{device_topic(store, kind, device)}/status"


def edge_status_topic(store: str) -> str:
    return f"store/{store}/edge/status"


def request_topic(store: str, kind: str, device: str, method: str) -> str:
    return f"{device_topic(store, kind, device)}/req/{method}"


def reply_topic(store: str, kind: str, device: str) -> str:
    return f"{device_topic(store, kind, device)}/res"


def event_topic(store: str, kind: str, device: str, event: str) -> str:
    return f"{device_topic(store, kind, device)}/evt/{event}"


def command_topic(store: str, kind: str, device: str, command: str) -> str:
    return f"{device_topic(store, kind, device)}/cmd/{command}"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed device topic: `store/{store}/{kind}/{device}/{channel}[/{name}]`."""

    store: str
    kind: str
    device: str
    channel: str  # status | req | res | evt | cmd
    name: str = ""

    @property
    def device_key(self) -> str:
        return f"{self.kind}/{self.device}"


def parse_topic(topic: str) -> Topic | None:
    """Split a device topic; None when it is not one of the contract's shapes."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "store":
        return None
    _, store, kind, device, channel, *rest = parts
    if kind not in DEVICE_KINDS or not ID_RE.match(device) or not ID_RE.match(store):
        return None
    if channel in ("status", "res"):
        return Topic(store, kind, device, channel) if not rest else None
    if channel in ("req", "evt", "cmd") and len(rest) == 1 and METHOD_RE.match(rest[0]):
        return Topic(store, kind, device, channel, rest[0])
    return None


# ---------------------------------------------------------------- envelopes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A request, event or command envelope: `{"v":1,"id","ts","type","data"}`."""

    id: str
    ts: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    v: int = 1

    def to_json(self) -> bytes:
        return json.dumps(
            {"v": self.v, "id": self.id, "ts": self.ts, "type": self.type, "data": self.data},
            separators=(",", ":"), ensure_ascii=False,
        ).encode()


def new_envelope(type_: str, data: dict[str, Any] | None = None) -> Envelope:
    return Envelope(id=uuid7(), ts=now_rfc3339(), type=type_, data=data or {})


def reply_ok(request_id: str | None, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "id": uuid7(), "re": request_id, "ts": now_rfc3339(), "ok": True,
            "data": data}


def reply_error(request_id: str | None, error: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "id": uuid7(), "re": request_id, "ts": now_rfc3339(), "ok": False,
            "error": error}


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def decode_json(payload: bytes) -> Any:
    """Decode an envelope's bytes: at most 64 KiB of UTF-8 JSON, or BadRequest."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise BadRequest(f"Message too large: {len(payload)} bytes, the limit is "
                         f"{MAX_ENVELOPE_BYTES}.", detail={"reason": "oversize"})
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Message is not UTF-8 text.", detail={"reason": "encoding"}) from None
    try:
        return _DECODER.decode(text)
    except ValueError:
        raise BadRequest("Message is not valid JSON.", detail={"reason": "json"}) from None


def peek_id(obj: Any) -> str | None:
    """The request id, if the decoded object carries a well-formed one (for error replies)."""
    if isinstance(obj, dict) and is_uuid(obj.get("id")):
        return obj["id"]
    return None


def parse_envelope(obj: Any, expected_type: str | None = None) -> Envelope:
    """Check a decoded envelope's fields and types; BadRequest names the first problem."""
    if not isinstance(obj, dict):
        raise BadRequest("Message must be a JSON object.", detail={"reason": "shape"})
    if type(obj.get("v")) is not int or obj["v"] != 1:
        raise BadRequest("Unsupported envelope version; expected \"v\": 1.",
                         detail={"field": "v"})
    if not is_uuid(obj.get("id")):
        raise BadRequest("Field \"id\" must be a UUID (UUIDv7) string.", detail={"field": "id"})
    ts = obj.get("ts")
    try:
        parse_ts(ts)
    except (ValueError, TypeError):
        raise BadRequest("Field \"ts\" must be an RFC 3339 timestamp.",
                         detail={"field": "ts"}) from None
    type_ = obj.get("type")
    if not isinstance(type_, str) or not METHOD_RE.match(type_):
        raise BadRequest("Field \"type\" must name the method or event.",
                         detail={"field": "type"})
    if expected_type is not None and type_ != expected_type:
        raise BadRequest(f"Envelope type {type_!r} does not match the topic's {expected_type!r}.",
                         detail={"field": "type"})
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise BadRequest("Field \"data\" must be a JSON object.", detail={"field": "data"})
    return Envelope(id=obj["id"], ts=str(ts), type=type_, data=data)
