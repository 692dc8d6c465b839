"""The envelope contract: ids, timestamps, topics and validation of what devices send."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from store_contract.errors import BadRequest
from store_contract.protocol import (
    MAX_ENVELOPE_BYTES,
    decode_json,
    new_envelope,
    now_rfc3339,
    parse_envelope,
    parse_topic,
    parse_ts,
    uuid7,
)


def test_uuid7_has_version_7_and_increases() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_timestamps_are_utc_with_milliseconds() -> None:
    ts = now_rfc3339()
    assert ts.endswith("Z") and len(ts) == len("2026-11-22T14:03:05.120Z")
    assert parse_ts(ts).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_topics_parse_only_in_the_contracts_shapes() -> None:
    t = parse_topic("store/s1/pos/lane-1/req/coupon.apply")
    assert t is not None and (t.kind, t.device, t.channel, t.name) == (
        "pos", "lane-1", "req", "coupon.apply")
    assert parse_topic("store/s1/pos/lane-1/status") is not None
    for bad in ("store/s1/fridge/x/status", "store/s1/pos/Lane/status", "other/s1/pos/x/status",
                "store/s1/pos/x/req", "store/s1/pos/x/req/a/b", "store/s1/pos/x/status/extra"):
        assert parse_topic(bad) is None, bad


def _valid(**changes: Any) -> dict[str, Any]:
    env = json.loads(new_envelope("ping", {"echo": "x"}).to_json())
    env.update(changes)
    return env


def test_a_valid_envelope_round_trips() -> None:
    env = parse_envelope(decode_json(json.dumps(_valid()).encode()), expected_type="ping")
    assert env.type == "ping" and env.data == {"echo": "x"}


@pytest.mark.parametrize(("payload", "words"), [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"x" * (MAX_ENVELOPE_BYTES + 1), "too large"),
    (b'{"v": NaN}', "not valid JSON"),
])
def test_undecodable_bytes_are_bad_requests(payload: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        decode_json(payload)


@pytest.mark.parametrize(("obj", "field"), [
    (_valid(v=2), "v"),
    (_valid(v=True), "v"),
    (_valid(v=1.0), "v"),
    (_valid(id=str(uuid.uuid4()).upper()), "id"),
    (_valid(id="----" + "0" * 32), "id"),
    (_valid(id="123"), "id"),
    (_valid(id=7), "id"),
    (_valid(ts="yesterday"), "ts"),
    (_valid(ts="2026-11-22T14:03:05"), "ts"),
    (_valid(type=5), "type"),
    (_valid(type="coupon.apply"), "type"),
    (_valid(data=[1, 2]), "data"),
])
def test_wrong_typed_fields_are_named(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_envelope(obj, expected_type="ping")
    assert err.value.detail.get("field") == field


def test_a_json_array_is_not_an_envelope() -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        parse_envelope([1, 2, 3])


def test_ids_codes_and_times_are_matched_to_the_end_of_the_text() -> None:
    """`$` also matches before a final newline; every boundary pattern must not."""
    from cloud_sync.hub.ingest import EVENT_ID_RE
    from cloud_sync.hub.managers import USERNAME_RE
    from edge import settings, transactions
    from store_contract import basket, campaigns, customers, protocol

    cases = [(protocol.ID_RE, "lane-1"), (protocol.METHOD_RE, "coupon.apply"),
             (transactions.TXN_RE, "t-1"), (campaigns.COUPON_ID_RE, "cpn-1"),
             (campaigns.PLAIN_CODE_RE, "SAVE10"), (campaigns.UNTIL_RE, "2026-11-30"),
             (basket.SKU_RE, "milk"), (basket.CURRENCY_RE, "EUR"),
             (customers.CUSTOMER_ID_RE, "c-1"), (customers.CARD_RE, "4000123412341234"),
             (customers.EMAIL_RE, "a@example.org"), (settings.ID_RE, "store-1"),
             (EVENT_ID_RE, "0123456789ab"), (USERNAME_RE, "mia")]
    for pattern, good in cases:
        assert pattern.match(good), pattern.pattern
        assert not pattern.match(good + "\n"), pattern.pattern
    protocol.parse_ts("2026-11-30T10:00:00Z")
    with pytest.raises(ValueError):
        protocol.parse_ts("2026-11-30T10:00:00Z\n")
