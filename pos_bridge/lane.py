"""The lane client a POS integrator embeds: identify, coupons, complete and void (docs/checkout.md).

    lane = Lane(MqttTransport(DeviceClient(...).connect()))
    # or, for a POS without MQTT:
    lane = Lane(HttpTransport("http://edge:8080", "lane-1", device_password))

    txn = new_txn_id()
    shopper = lane.identify(txn, code=scanned)
    items = basket([{"sku": "4011", "qty": 2, "unit_minor": 129, "categories": ["fruit"]}], "EUR")
    coupon = lane.apply_coupon(txn, "SAVE10", items)
    lane.complete(txn, items, [{"kind": "card", "amount_minor": 258 - coupon["discount_minor"]}])

Every call is one request with one id. After a timeout or a dropped connection the same
request (same id, same data) is sent again, so the edge runs it once however many times it
arrives. A refusal (`ok: false`) is the edge's answer, not a failure: it raises `Refused`
with the cashier's sentence and is never retried.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import requests

from pos_bridge.device import DeviceClient
from store_contract.protocol import Envelope, now_rfc3339, uuid7

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- errors


class LaneError(Exception):
    """Base of everything the lane client raises about talking to the edge."""


class Refused(LaneError):
    """The edge answered `ok: false`: a coupon used, a customer unknown, a bad request...

    `message` is a sentence for the cashier; `code` is stable (docs/checkout.md).
    """

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail: dict[str, Any] = detail or {}

    def __repr__(self) -> str:
        return f"Refused({self.code!r}, {self.message!r})"


class NotAllowed(LaneError):
    """The lane's credentials or device id were not accepted (HTTP 401/403/404, broker refusal).

    A configuration problem, not a checkout outcome: retrying cannot help.
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class EdgeUnreachable(LaneError):
    """No answer from the edge after every retry; the request may or may not have run.

    Calling the same method again for the same `txn` is safe: effects are per transaction.
    """

    def __init__(self, method: str, attempts: int, cause: BaseException | None) -> None:
        super().__init__(f"The store server did not answer {method} after {attempts} "
                         f"attempt{'s' if attempts != 1 else ''} ({cause or 'no reply'}).")
        self.method = method
        self.attempts = attempts


# ---------------------------------------------------------------- transports


class Transport(Protocol):
    """Carries one request envelope to the edge and brings back its reply envelope.

    Raises TimeoutError or ConnectionError when sending again might work, `NotAllowed` or
    `Refused` when it cannot.
    """

    def send(self, method: str, data: dict[str, Any], request_id: str,
             timeout: float) -> dict[str, Any]: ...


class MqttTransport:
    """Requests over the store broker through a connected `DeviceClient` of kind `pos`."""

    def __init__(self, device: DeviceClient) -> None:
        self.device = device

    def send(self, method: str, data: dict[str, Any], request_id: str,
             timeout: float) -> dict[str, Any]:
        if self.device.refused:
            raise NotAllowed("unauthorized", f"The broker refused lane {self.device.device_id}'s "
                             f"login ({self.device.refused}).")
        # DeviceClient raises TimeoutError; paho queues QoS 1 publishes while reconnecting.
        return self.device.request(method, data, timeout=timeout, request_id=request_id)


# Statuses where the edge (or a proxy in front of it) may answer differently in a moment.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class HttpTransport:
    """Requests as `POST {base_url}/api/v1/pos/{device_id}/{method}` for POS without MQTT.

    The device password is the bearer token. One `requests.Session` keeps the connection
    alive between requests; pass your own to share a pool or set TLS options.
    """

    def __init__(self, base_url: str, device_id: str, token: str,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        self.session = session if session is not None else requests.Session()
        self._owns_session = session is None
        self._headers = {"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json", "Accept": "application/json"}

    def url(self, method: str) -> str:
        return f"{self.base_url}/api/v1/pos/{quote(self.device_id, safe='')}/{method}"

    def send(self, method: str, data: dict[str, Any], request_id: str,
             timeout: float) -> dict[str, Any]:
        body = Envelope(id=request_id, ts=now_rfc3339(), type=method, data=data).to_json()
        try:
            resp = self.session.post(self.url(method), data=body, headers=self._headers,
                                     timeout=timeout)
        # ConnectTimeout is both a Timeout and a ConnectionError: either way we resend.
        except requests.Timeout as exc:
            raise TimeoutError(f"no reply to {method} within {timeout:.1f} s") from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise ConnectionError(f"could not reach {self.base_url}: {exc}") from exc
        except requests.RequestException as exc:
            raise LaneError(f"could not send {method} to {self.base_url}: {exc}") from exc
        if resp.status_code == 200:
            reply = _json_or_none(resp)
            if not isinstance(reply, dict):
                raise LaneError(f"{self.url(method)} answered 200 without a reply envelope")
            return reply
        code, message, detail = _http_error(resp)
        if resp.status_code in _TRANSIENT_STATUSES:
            raise ConnectionError(f"HTTP {resp.status_code} {code}: {message}")
        if resp.status_code in (401, 403, 404):
            raise NotAllowed(code, message, resp.status_code)
        raise Refused(code, message, detail)

    def close(self) -> None:
        """Close the connection pool if this transport made it."""
        if self._owns_session:
            self.session.close()


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _http_error(resp: requests.Response) -> tuple[str, str, dict[str, Any]]:
    """The `{"error": {...}}` body of a non-200 answer, or a stand-in made from the status."""
    body = _json_or_none(resp)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        detail = error.get("detail")
        return (error["code"], str(error.get("message") or error["code"]),
                detail if isinstance(detail, dict) else {})
    return f"http_{resp.status_code}", f"HTTP {resp.status_code} {resp.reason}", {}


# ---------------------------------------------------------------- helpers


def new_txn_id() -> str:
    """A fresh transaction id (a UUIDv7, so ids sort by when the sale started)."""
    return uuid7()


def _minor(value: Any, field: str, low: int) -> int:
    # bool is an int in Python and 2.49 is not a price: money on the wire is whole minor units.
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{field} must be a whole number of at least {low} "
                         f"(minor units, e.g. 249 for 2.49), not {value!r}")
    return value


def basket(lines: Iterable[Mapping[str, Any]], currency: str) -> dict[str, Any]:
    """A basket for the wire from lines `{"sku", "unit_minor", "qty"?=1, "categories"?=[],
    "name"?}` (the name is what the receipt prints).

    Checks that quantities and prices are whole numbers and adds `total_minor`, the sum of
    qty x unit_minor before any coupon. Raises ValueError on a line the edge would reject.
    """
    out = []
    total = 0
    for i, line in enumerate(lines):
        sku = line.get("sku")
        if not isinstance(sku, str) or not sku:
            raise ValueError(f"line {i}: sku must be text")
        categories = line.get("categories", [])
        if isinstance(categories, str) or not all(isinstance(c, str) for c in categories):
            raise ValueError(f"line {i}: categories must be a list of category ids")
        qty = _minor(line.get("qty", 1), f"line {i}: qty", 1)
        unit_minor = _minor(line.get("unit_minor"), f"line {i}: unit_minor", 0)
        name = line.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"line {i}: name must be text")
        out.append({"sku": sku, "qty": qty, "unit_minor": unit_minor,
                    "categories": list(categories), **({"name": name} if name else {})})
        total += qty * unit_minor
    return {"currency": currency, "lines": out, "total_minor": total}


def tender(kind: str, amount_minor: int) -> dict[str, Any]:
    """One payment towards a sale, e.g. `tender("card", 1234)`."""
    return {"kind": kind, "amount_minor": _minor(amount_minor, "amount_minor", 0)}


# ---------------------------------------------------------------- the lane


class Lane:
    """A POS lane talking to the store edge over any `Transport`.

    `timeout` is per attempt; `retries` is how many times a request is sent again after the
    first attempt got no answer, waiting `backoff`, then twice as long each time. Methods
    return the reply's `data`, raise `Refused` for `ok: false` and `EdgeUnreachable` when
    no attempt got an answer. Safe to share between threads if the transport is.
    """

    def __init__(self, transport: Transport, *, timeout: float = 2.0, retries: int = 3,
                 backoff: float = 0.2) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def identify(self, txn: str, code: str | None = None,
                 phone: str | None = None) -> dict[str, Any]:
        """Link the shopper to the sale by a scanned member QR or loyalty card, or by phone.

        Returns `{"customer": {...}, "wallet": [...], "offers": [...]}`; raises `Refused`
        with code `customer_unknown` when nobody matches.
        """
        if (code is None) == (phone is None):
            raise ValueError("identify needs exactly one of code or phone")
        if code is not None:
            return self.request("identify", {"txn": txn, "code": code})
        return self.request("identify", {"txn": txn, "phone": phone})

    def apply_coupon(self, txn: str, code: str, basket: Mapping[str, Any]) -> dict[str, Any]:
        """Check a scanned coupon against the basket and reserve it for this sale.

        Returns `{"coupon", "campaign", "discount_minor", "currency", "description",
        "reservation", ...}`; a coupon that cannot be used raises `Refused` whose message
        says why ("Spend €3.20 more to use this coupon").
        """
        return self.request("coupon.apply", {"txn": txn, "code": code, "basket": dict(basket)})

    def remove_coupon(self, txn: str, reservation: str) -> dict[str, Any]:
        """Release a coupon reserved by `apply_coupon` (the shopper changed their mind)."""
        return self.request("coupon.remove", {"txn": txn, "reservation": reservation})

    def complete(self, txn: str, basket: Mapping[str, Any], tenders: Iterable[Mapping[str, Any]],
                 total_minor: int | None = None, currency: str | None = None) -> dict[str, Any]:
        """Finish the sale: reserved coupons become redemptions and the receipt is queued.

        `total_minor` is what the shopper pays after coupons; it defaults to the sum of the
        tenders. `currency` defaults to the basket's. Returns `{"redemptions", "receipt"}`.
        """
        paid = [dict(t) for t in tenders]
        if total_minor is None:
            total_minor = sum(_minor(t.get("amount_minor"), "amount_minor", 0) for t in paid)
        return self.request("txn.complete", {
            "txn": txn, "basket": dict(basket), "tenders": paid, "total_minor": total_minor,
            "currency": currency if currency is not None else basket.get("currency")})

    def void(self, txn: str) -> dict[str, Any]:
        """Cancel the sale: release its reservations, or roll back its redemptions (a return)."""
        return self.request("txn.void", {"txn": txn})

    def request(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send one request, resending it under the same id until answered or out of retries."""
        request_id = uuid7()
        # The edge tells a resend from a reused id by comparing data, so freeze ours now.
        data = copy.deepcopy(data)
        attempts = self.retries + 1
        cause: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = self.transport.send(method, data, request_id, self.timeout)
            except (TimeoutError, ConnectionError) as exc:
                cause = exc
                log.info("%s %s: %s (attempt %d of %d)", method, request_id, exc, attempt + 1,
                         attempts)
                continue
            return _unwrap(method, reply)
        raise EdgeUnreachable(method, attempts, cause) from cause


def _unwrap(method: str, reply: Any) -> dict[str, Any]:
    """The `data` of an ok reply; `Refused` for an error reply; LaneError for anything else."""
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise LaneError(f"the edge's reply to {method} is not a reply envelope")
    if reply["ok"]:
        data = reply.get("data")
        return data if isinstance(data, dict) else {}
    error = reply.get("error")
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or "error")
    detail = error.get("detail")
    raise Refused(code, str(error.get("message") or code),
                  detail if isinstance(detail, dict) else None)
