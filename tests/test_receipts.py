"""Receipts end to end: a sale completes, the edge builds the receipt, the spool sends it to
the printer service, and a virtual network printer (real TCP, real ESC/POS) prints it.

The edge runs in this process (the `edge` fixture) with a real Mosquitto; the printer
service is the one the edge hosts for network printers. What the printer received is read
back from its ESC/POS bytes, and the next-visit coupon's QR is decoded with zxing-cpp and
used at the checkout again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
import zxingcpp

from edge.app.printers import add_printer
from edge.app.service import EdgeService
from edge.coupons import upsert_campaigns
from edge.customers import upsert_customers
from edge.settings import Settings
from pos_bridge.device import DeviceClient
from pos_bridge.printing.interpreter import Printout
from pos_bridge.virtual_printer import VirtualPrinter
from store_contract.campaigns import parse_campaign
from store_contract.customers import parse_customer
from tests.conftest import wait_until

ANNA = {"id": "c-anna", "display_name": "Anna", "tier": "gold", "points": 1240,
        "card": "4000123412341234", "segments": ["coffee-lovers"],
        "consent": {"personalised": True}}
CHLOE = {"id": "c-chloe", "display_name": "Chloé", "tier": "member", "points": 45,
         "card": "4000123456780002"}  # no consent to personalisation
CAMPAIGNS = [
    {"id": "cmp-fruit", "name": "Fruit", "description": "€1 off fruit", "offer": True,
     "disc": {"kind": "amount", "value_minor": 100, "currency": "EUR"}, "cats": ["fruit"]},
    {"id": "cmp-coffee", "name": "Coffee", "description": "€2 off coffee", "offer": True,
     "segments": ["coffee-lovers"], "skus": ["coffee"],
     "disc": {"kind": "amount", "value_minor": 200, "currency": "EUR"}},
    {"id": "cmp-gold", "name": "Gold", "description": "5% off for gold members", "offer": True,
     "tiers": ["gold"], "disc": {"kind": "percent", "value": 5}},
    {"id": "cmp-silver", "name": "Silver", "description": "Silver only", "offer": True,
     "tiers": ["silver"], "disc": {"kind": "percent", "value": 7}},
]
BASKET = {"currency": "EUR", "total_minor": 1246, "lines": [
    {"sku": "apples", "qty": 2, "unit_minor": 299, "categories": ["fruit"],
     "name": "Äpfel, Crème & Jalapeño"},
    {"sku": "tea", "qty": 1, "unit_minor": 648, "categories": ["tea"], "name": "Tea £ import"}]}


@pytest.fixture
def printer(virtual_printer: Callable[[str], VirtualPrinter]) -> VirtualPrinter:
    return virtual_printer("TM-T20II")


def seed(edge: EdgeService, *customers: dict[str, Any]) -> None:
    records = [parse_customer(c, edge.lookup) for c in customers]
    campaigns = [parse_campaign(c, edge.settings.locale) for c in CAMPAIGNS]
    with edge.store.transaction() as db:
        upsert_customers(db, records, edge.coupons.wallet_entry)
        upsert_campaigns(db, campaigns)


def attach(edge: EdgeService, vp: VirtualPrinter, lanes: list[str],
           printer_id: str = "printer-1") -> None:
    """Set the virtual printer up as a network printer of these lanes; the edge serves it."""
    add_printer(edge.settings, edge.datadir, edge.store, printer_id, lanes=lanes,
                connection=vp.address, profile="TM-T20II")
    edge.printers.refresh()
    assert wait_until(lambda: printer_id in edge.printers.services
                      and edge.printers.services[printer_id][1] is not None
                      and edge.printers.services[printer_id][1].device.connected.is_set(), 15)


@pytest.fixture
def shop(edge: EdgeService, printer: VirtualPrinter,
         device: Callable[..., DeviceClient]) -> tuple[EdgeService, VirtualPrinter, DeviceClient]:
    seed(edge, ANNA, CHLOE)
    attach(edge, printer, ["lane-1"])
    return edge, printer, device("pos", "lane-1")


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"], reply
    data: dict[str, Any] = reply["data"]
    return data


def sale(lane: DeviceClient, txn: str, *, card: str | None = None,
         basket: dict[str, Any] | None = None) -> str:
    """Identify (optionally) and complete a sale; the receipt's job id."""
    basket = basket or BASKET
    if card:
        ok(lane.request("identify", {"txn": txn, "code": card}))
    done = ok(lane.request("txn.complete", {
        "txn": txn, "basket": basket, "total_minor": basket["total_minor"], "currency": "EUR",
        "tenders": [{"kind": "card", "amount_minor": basket["total_minor"]}]}))
    job: str = done["receipt"]["job"]
    return job


def job_row(edge: EdgeService, job: str) -> dict[str, Any]:
    row = edge.store.query_one("SELECT * FROM print_jobs WHERE job = ?", (job,))
    assert row is not None
    return row


def printed_events(edge: EdgeService, job: str) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) for r in edge.store.query(
        "SELECT data FROM outbox WHERE type = 'receipt.printed'")
        if json.loads(r["data"])["job"] == job]


def with_job(printouts: list[Printout], job: str) -> list[Printout]:
    return [p for p in printouts if p.complete and p.find_text(job)]


def qr_payloads(printout: Printout) -> list[str]:
    found = []
    for image in printout.images:
        found += [r.text for r in zxingcpp.read_barcodes(image.convert("L"))]
    return found


# ---------------------------------------------------------------- what is printed


def test_personalised_receipt_prints_and_its_offer_qr_is_a_coupon_the_checkout_takes(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    job = sale(lane, "s-1", card=ANNA["card"])
    [paper] = vp.wait_printouts(1)
    text = "\n".join(paper.text)
    for expected in ("Demo Store", "Äpfel, Crème & Jalapeño", "€5.98", "Tea £ import", "€12.46",
                     "Thank you, Anna!", "1,240", job):
        assert expected in text, f"{expected!r} not on the receipt:\n{text}"
    assert paper.unknown == []
    # Anna is in the coffee-lovers segment, but bought fruit today: the fruit offer wins.
    payloads = qr_payloads(paper)
    coupons = [p for p in payloads if p.startswith("ey") and p.count(".") == 2]
    surveys = [p for p in payloads if p.startswith("https://")]
    assert len(coupons) == 1 and len(surveys) == 1, payloads
    assert "t=s-1" in surveys[0]
    assert wait_until(lambda: job_row(edge, job)["state"] == "printed", 10)
    [event] = printed_events(edge, job)
    assert event["personalised"] is True and event["offer"]["campaign"] == "cmp-fruit"
    # The printed coupon is Anna's, and the checkout accepts it on her next visit.
    ok(lane.request("identify", {"txn": "s-2", "code": ANNA["card"]}))
    applied = ok(lane.request("coupon.apply", {"txn": "s-2", "code": coupons[0],
                                               "basket": BASKET}))
    assert applied["campaign"] == "cmp-fruit" and applied["discount_minor"] == 100
    # ...but not for somebody else.
    ok(lane.request("identify", {"txn": "s-3", "code": CHLOE["card"]}))
    refused = lane.request("coupon.apply", {"txn": "s-3", "code": coupons[0], "basket": BASKET})
    assert refused["error"]["code"] == "coupon_wrong_customer"


def test_a_discount_is_printed_under_the_subtotal_it_was_taken_off(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    sale(lane, "s-1", card=ANNA["card"])
    [first] = vp.wait_printouts(1)
    [coupon] = [p for p in qr_payloads(first) if p.startswith("ey") and p.count(".") == 2]
    ok(lane.request("identify", {"txn": "s-2", "code": ANNA["card"]}))
    ok(lane.request("coupon.apply", {"txn": "s-2", "code": coupon, "basket": BASKET}))
    ok(lane.request("txn.complete", {
        "txn": "s-2", "basket": BASKET, "total_minor": 1146, "currency": "EUR",
        "tenders": [{"kind": "card", "amount_minor": 1146}]}))
    paper = vp.wait_printouts(2)[1]
    rows = [line.strip() for line in paper.text]
    at = {label: next(i for i, row in enumerate(rows) if row.startswith(label))
          for label in ("Tea £ import", "Subtotal", "€1 off fruit", "Total")}
    # The lines, their subtotal, the discount right under it, then what was paid.
    assert at["Tea £ import"] < at["Subtotal"] < at["€1 off fruit"] < at["Total"], rows
    assert at["€1 off fruit"] == at["Subtotal"] + 1, rows
    assert rows[at["Subtotal"]].endswith("€12.46") and rows[at["€1 off fruit"]].endswith("-€1.00")
    assert rows[at["Total"]].endswith("€11.46"), rows


def test_without_consent_or_identification_the_receipt_is_plain(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    chloe_job = sale(lane, "s-1", card=CHLOE["card"])
    guest_job = sale(lane, "s-2")
    papers = vp.wait_printouts(2)
    for job, paper in zip((chloe_job, guest_job), papers, strict=True):
        assert paper.find_text(job)
        text = "\n".join(paper.text)
        assert "Chloé" not in text and "Points" not in text and "saved" not in text
        assert qr_payloads(paper) == []
        document = json.loads(job_row(edge, job)["document"])
        assert document["personalised"] is False
        assert {b["type"] for b in document["blocks"]} == {"header", "lines", "totals",
                                                          "footer"}
    assert edge.store.query("SELECT * FROM issued_coupons") == []


def test_offer_choice_follows_targeting_and_does_not_repeat(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    coffee = {"currency": "EUR", "total_minor": 799, "lines": [
        {"sku": "coffee", "qty": 1, "unit_minor": 799, "categories": ["pantry"]}]}
    offered = []
    for i in range(4):
        job = sale(lane, f"s-{i}", card=ANNA["card"], basket=coffee)
        row = job_row(edge, job)
        issued = edge.store.query_one("SELECT campaign_id FROM issued_coupons WHERE id = ?",
                                      (row["offer_coupon"],)) if row["offer_coupon"] else None
        offered.append(issued["campaign_id"] if issued else None)
    # Bought coffee and in its segment first; then her tier's; then for everybody; never the
    # silver members' campaign; then nothing new while she still holds all three.
    assert offered == ["cmp-coffee", "cmp-gold", "cmp-fruit", None]
    vp.wait_printouts(4)


# ---------------------------------------------------------------- faults


def test_paper_out_before_and_during_a_job_holds_then_prints_once(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    vp.set_paper("empty")
    first = sale(lane, "s-1", card=ANNA["card"])
    assert wait_until(lambda: job_row(edge, first)["state"] == "held", 10)
    assert job_row(edge, first)["reason"] == "paper_empty"
    assert vp.printouts == []
    vp.set_paper("ok")
    assert with_job(vp.wait_printouts(1), first)
    assert wait_until(lambda: job_row(edge, first)["state"] == "printed", 10)
    # The roll ends half way through the next receipt: held, then printed whole, once.
    vp.run_out_after(300)
    second = sale(lane, "s-2", card=ANNA["card"])
    assert wait_until(lambda: job_row(edge, second)["state"] == "held", 10)
    vp.set_paper("ok")
    assert wait_until(lambda: job_row(edge, second)["state"] == "printed", 15)
    whole = with_job(vp.printouts, second)
    assert len(whole) == 1
    assert any(not p.complete for p in vp.printouts)  # the torn-off part
    assert len(printed_events(edge, first)) == 1 and len(printed_events(edge, second)) == 1


# An edge that gives up on an unreachable printer after two resends (2 s, then 4 s).
@pytest.mark.edge_settings(print_retries=2)
def test_unreachable_printer_never_blocks_the_checkout_and_fails_visibly(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, printer, lane = shop
    printer.set_reachable(False)
    jobs = [sale(lane, f"s-{i}", card=ANNA["card"]) for i in range(3)]
    # The sales completed (replies came back) with the printer gone; the receipts wait.
    retries = edge.settings.print_retries
    assert wait_until(lambda: all(job_row(edge, j)["state"] == "failed" for j in jobs), 30)
    for j in jobs:
        row = job_row(edge, j)
        assert row["reason"] == "unreachable" and row["attempts"] == retries + 1
    assert [r["job"] for r in edge.spool.recent(state="failed")] == list(reversed(jobs))
    printer.set_reachable(True)
    for j in jobs:
        assert edge.spool.reprint(j) == j
    papers = printer.wait_printouts(3)
    assert [len(with_job(papers, j)) for j in jobs] == [1, 1, 1]


def test_a_job_sent_twice_prints_once_and_answers_from_other_printers_are_ignored(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient],
        device: Callable[..., DeviceClient], caplog: pytest.LogCaptureFixture) -> None:
    edge, vp, lane = shop
    job = sale(lane, "s-1")
    vp.wait_printouts(1)
    assert wait_until(lambda: job_row(edge, job)["state"] == "printed", 10)
    # The spool resends everything unfinished after a restart; pretend it did for this one.
    with edge.store.transaction() as db:
        db.conn.execute("UPDATE print_jobs SET state = 'sending' WHERE job = ?", (job,))
    assert edge.spool.send_now(job)
    assert wait_until(lambda: job_row(edge, job)["state"] == "printed", 10)
    assert len(with_job(vp.printouts, job)) == 1
    assert len(printed_events(edge, job)) == 1
    # Another printer claiming this job changes nothing.
    other = device("printer", "printer-9")
    with edge.store.transaction() as db:
        db.conn.execute("UPDATE print_jobs SET state = 'held' WHERE job = ?", (job,))
    caplog.set_level("WARNING", logger="edge.spool")
    other.event("job", {"job": job, "state": "printed"})
    # Wait for the edge to have handled it (it says so), or to have believed it.
    assert wait_until(lambda: any(
        f"printer printer-9 reported job {job}, which is not its job" in r.getMessage()
        for r in caplog.records) or job_row(edge, job)["state"] != "held", 10)
    assert job_row(edge, job)["state"] == "held"


def test_a_200_line_receipt_and_hostile_names_print_whole_and_inject_nothing(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    hostile = "\x1b@\x1dV\x00Evil\x10\x04\x01\x1bp\x00\x19\xfa\x7f\x9bX"
    lines = [{"sku": f"sku-{i}", "qty": 1, "unit_minor": 100 + i, "categories": ["misc"],
              "name": f"Item {i:03d}"} for i in range(199)]
    lines.append({"sku": "evil", "qty": 1, "unit_minor": 1, "name": hostile})
    big = {"currency": "EUR", "lines": lines,
           "total_minor": sum(ln["unit_minor"] for ln in lines)}
    job = sale(lane, "s-1", basket=big)
    [paper] = vp.wait_printouts(1)
    assert paper.find_text(job)
    text = paper.text
    names = [ln for ln in text if ln.startswith("Item ")]
    assert [n.split()[1] for n in names] == [f"{i:03d}" for i in range(199)]
    assert any("@VEvil" in ln for ln in text), text[-20:]
    assert paper.unknown == []
    assert len(vp.printouts) == 1  # one cut: the name did not cut the paper
    assert wait_until(lambda: job_row(edge, job)["state"] == "printed", 10)


def test_no_printer_for_the_lane_is_a_visible_failure_not_a_refused_sale(
        edge: EdgeService, device: Callable[..., DeviceClient]) -> None:
    lane = device("pos", "lane-7")
    job = sale(lane, "s-1")
    row = job_row(edge, job)
    assert row["state"] == "failed" and row["reason"] == "no_printer"


def test_printer_journal_and_spool_keep_the_database_consistent(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, vp, lane = shop
    jobs = [sale(lane, f"s-{i}", card=ANNA["card"] if i % 2 else None) for i in range(6)]
    vp.wait_printouts(6)
    assert wait_until(lambda: all(job_row(edge, j)["state"] == "printed" for j in jobs), 10)
    conn = sqlite3.connect(edge.datadir.root / "printers" / "printer-1.journal.db")
    try:
        states = dict(conn.execute("SELECT job, state FROM jobs").fetchall())
    finally:
        conn.close()
    assert {j: states.get(j) for j in jobs} == dict.fromkeys(jobs, "printed")


# ---------------------------------------------------------------- spool error paths


# print_retries=0: an edge that fails a receipt after its first unanswered or unreachable try.
@pytest.mark.edge_settings(print_retries=0)
def test_a_job_nobody_answers_fails_as_no_answer_once_its_tries_are_spent(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient]) -> None:
    edge, printer, lane = shop
    # The printer service is away (stopped): the job goes out and no answer comes back.
    _, service = edge.printers.services["printer-1"]
    assert service is not None
    service.stop()
    job = sale(lane, "s-1")
    assert wait_until(lambda: job_row(edge, job)["state"] == "sending", 10)
    assert job_row(edge, job)["attempts"] == 1
    # No answer within the spool's time: tried again, or (print_retries 0) failed.
    clock = edge.spool.clock
    edge.spool.clock = lambda: clock() + 11  # past ANSWER_TIMEOUT_S, not waited out here
    try:
        assert edge.spool.tick() == 0
    finally:
        edge.spool.clock = clock
    row = job_row(edge, job)
    assert (row["state"], row["reason"], row["attempts"]) == ("failed", "no_answer", 1)
    assert edge.spool.job(job)["reason_text"] == "The printer service did not answer."
    assert printed_events(edge, job) == [] and printer.printouts == []


def _service_of(edge: EdgeService, printer_id: str = "printer-1") -> Any:
    _, service = edge.printers.services[printer_id]
    assert service is not None
    return service


@pytest.mark.edge_settings(print_retries=0)
def test_an_interrupted_job_is_reprinted_under_a_new_id_and_its_old_id_stays_retired(
        shop: tuple[EdgeService, VirtualPrinter, DeviceClient], settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    from pos_bridge.printer import PrintJournal

    caplog.set_level("INFO")
    edge, printer, lane = shop
    printer.set_reachable(False)
    old = sale(lane, "s-1", card=ANNA["card"])
    assert wait_until(lambda: job_row(edge, old)["state"] == "failed", 10)
    # The printer service died after the job's first byte: its journal says `printing`.
    journal = PrintJournal(settings.data_path / "printers" / "printer-1.journal.db")
    journal.begin(old)
    journal.close()
    printer.set_reachable(True)
    assert edge.spool.reprint(old) == old  # failed unreachable: tried again as it is
    assert wait_until(lambda: job_row(edge, old)["reason"] == "interrupted", 10)
    assert job_row(edge, old)["state"] == "failed" and printer.printouts == []

    new = edge.spool.reprint(old)
    assert new != old
    assert wait_until(lambda: job_row(edge, new)["state"] == "printed", 10)
    assert (job_row(edge, old)["state"], job_row(edge, old)["reason"]) == ("failed", "replaced")
    assert job_row(edge, new)["copy_of"] == old
    # The paper keeps the sale's receipt number (the old id) in its footer.
    [paper] = [p for p in printer.wait_printouts(1) if p.complete]
    assert paper.find_text(f"Receipt {old}")
    assert not paper.find_text("*** COPY ***")  # the first whole paper of the sale
    assert [e["copy_of"] for e in printed_events(edge, new)] == [old]

    # A late answer for the replaced job (its service confirming it after all) is not
    # believed: the sale already has its receipt under the new id.
    _service_of(edge).device.event("job", {"job": old, "state": "printed"})
    _service_of(edge).device.event("job", {"job": old, "state": "held", "reason": "offline"})
    assert wait_until(lambda: sum("replaced" in r.getMessage() and old in r.getMessage()
                                  for r in caplog.records) >= 2
                      or job_row(edge, old)["state"] != "failed", 10)
    row = job_row(edge, old)
    assert (row["state"], row["reason"], row["printed_at"]) == ("failed", "replaced", None)
    assert printed_events(edge, old) == []

    # Reprint pressed on the old row again: never its old id (the journal would refuse
    # it), but the receipt that replaced it, as a copy since that one printed.
    again = edge.spool.reprint(old)
    assert again not in (old, new)
    assert wait_until(lambda: job_row(edge, again)["state"] == "printed", 10)
    assert job_row(edge, again)["copy_of"] == new
    papers = [p for p in printer.wait_printouts(2) if p.complete]
    assert len(papers) == 2 and papers[1].find_text("*** COPY ***")
    assert papers[1].find_text(f"Receipt {old}")
    assert (job_row(edge, old)["state"], job_row(edge, old)["reason"]) == ("failed", "replaced")
