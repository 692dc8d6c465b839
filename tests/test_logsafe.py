"""No e-mail, phone or card number in a log line (edge/logsafe.py)."""

from __future__ import annotations

import io
import logging

import pytest
import requests

from edge.settings import Settings
from store_contract.logsafe import MASK, install, redact
from tests.conftest import EdgeProc, edge_log, wait_until

PERSONAL = ["Anna@Example.org", "a.b-c+tag@shop.example.co.uk", "+49 151 23456789",
            "+4915123456789", "+1 (415) 555-0134", "4000123412341234", "4000 1234 1234 1234",
            "5500-0000-0000-0004", "0151 23456789", "030/1234567"]
# What logs do say and must keep: ids, uuids, times, addresses, counts, hashes.
KEPT = ["01a22e29-9e46-73f5-8041-48bed879860d", "1732900000.123", "127.0.0.1:8080",
        "seq 123456", "2026-11-30T10:00:00.120Z", "tcp://10.0.0.21:9100", "cpn-01a22e29-9e46",
        "lane-12", "3f2a9b0c1d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4",
        "took 12.5 ms", "v2.4.1"]


@pytest.mark.parametrize("value", PERSONAL)
def test_personal_values_are_masked(value: str) -> None:
    out = redact(f"customer {value} was not found")
    assert value not in out and MASK in out


@pytest.mark.parametrize("value", KEPT)
def test_ids_times_and_addresses_are_kept(value: str) -> None:
    assert redact(f"x {value} y") == f"x {value} y"


def test_the_filter_masks_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test-logsafe")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install(logger)
    try:
        logger.warning("identify failed for %s", "Anna@Example.org")
        try:
            raise ValueError("bad card 4000123412341234")
        except ValueError:
            logger.exception("import line 3")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "Anna@Example.org" not in text and "4000123412341234" not in text
    assert "identify failed for [redacted]" in text and "ValueError: bad card" in text


def test_a_real_edge_logs_no_personal_value_sent_to_it(settings: Settings,
                                                       edge_process: EdgeProc
                                                       ) -> None:
    base = f"http://127.0.0.1:{edge_process.http_port}"
    assert wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).ok, 15)
    for value in PERSONAL:
        # Wherever a device or a script puts them: paths, tokens, bodies, sign-in names.
        requests.post(f"{base}/api/v1/pos/{value}/customer.identify", data=value.encode(),
                      headers={"Authorization": f"Bearer {value}"}, timeout=5)
        requests.get(f"{base}/api/v1/devices", auth=(value, value), timeout=5)
        requests.get(f"{base}/staff/{value}", timeout=5)
    text = edge_log(settings).read_text()
    assert "refused" in text  # the sign-ins were logged, without their names
    for value in PERSONAL:
        assert value not in text, value
