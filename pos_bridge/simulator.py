"""Simulated store devices for the demo: lanes, a printer, a scanner and a kiosk on the real bus.

    python -m pos_bridge.simulator DEVICES.json [--checkout-every SECONDS] [--http URL]
    python -m pos_bridge.simulator DEVICES.json --interactive LANE_ID

DEVICES.json: {"store": ..., "mqtt_url": ..., "devices": [{"kind","id","username","password"}],
"shoppers"?: [...], "coupons"?: [...]} (written by `edge demo`). A shopper is
`{"card": "..."}`, `{"phone": "..."}` or `{"member_jwk": {private OKP JWK}, "customer": id,
"kid": ...}` (a fresh member QR is signed for every visit); a coupon is a code or `{"code"}`.

The lanes run scripted checkouts through `pos_bridge.lane.Lane` (over MQTT, or HTTP with
`--http`): a random basket, maybe a shopper, maybe a coupon, then a card payment; one log
line each. With `--interactive` one lane takes commands from the terminal instead. Runs until
SIGTERM/SIGINT (or `quit`), then every device says goodbye.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import jwt

from pos_bridge.device import DeviceClient, DeviceError
from pos_bridge.lane import (
    EdgeUnreachable,
    HttpTransport,
    Lane,
    LaneError,
    MqttTransport,
    Refused,
    Transport,
    basket,
    new_txn_id,
    tender,
)
from store_contract import logsafe
from store_contract.basket import Product
from store_contract.protocol import uuid7
from store_contract.wording import money

log = logging.getLogger("pos_bridge.simulator")
MODELS = {"pos": "Simulated lane", "printer": "Simulated TM-T88", "scanner": "Simulated 2D imager",
          "kiosk": "Simulated kiosk", "display": "Simulated display"}
EXTRA_STATUS: dict[str, dict[str, Any]] = {"printer": {"paper": "ok", "cover": "closed"}}
LOCALE = "en_IE"
MEMBER_CODE_TTL_S = 120


CATALOGUE: tuple[Product, ...] = (
    Product("4011", "Bananas, loose", 129, ("produce", "fruit")),
    Product("4131", "Fuji apples, 6 pack", 299, ("produce", "fruit")),
    Product("5000169", "Organic whole milk 1 l", 149, ("dairy", "organic")),
    Product("5000328", "Greek yoghurt 500 g", 219, ("dairy",)),
    Product("5011038", "Mature cheddar 400 g", 449, ("dairy", "cheese")),
    Product("5010029", "Sourdough loaf", 349, ("bakery",)),
    Product("5000112", "Free-range eggs, 12", 389, ("eggs", "organic")),
    Product("8000070", "Ground coffee 500 g", 799, ("coffee", "pantry")),
    Product("8076809", "Spaghetti 500 g", 139, ("pasta", "pantry")),
    Product("5449000", "Sparkling water 6 x 1.5 l", 429, ("beverages",)),
    Product("5410228", "Pale ale 4 x 330 ml", 699, ("beverages", "alcohol")),
    Product("7622210", "Dark chocolate 100 g", 189, ("snacks", "confectionery")),
    Product("5000237", "Frozen peas 1 kg", 249, ("frozen", "vegetables")),
    Product("8001090", "Washing-up liquid 900 ml", 279, ("household",)),
    Product("4015400", "Nappies, size 4, 44 pack", 1399, ("baby",)),
)
BY_SKU = {p.sku: p for p in CATALOGUE}


def member_code(jwk: dict[str, Any], customer: str, kid: str | None = None,
                now: float | None = None) -> str:
    """A fresh member QR (`member+jwt`, EdDSA) for `customer`, as the shopper's app shows it."""
    key = jwt.PyJWK(jwk, algorithm="EdDSA").key
    iat = int(time.time() if now is None else now)
    headers = {"typ": "member+jwt", "kid": kid or jwk.get("kid")}
    claims = {"sub": customer, "iat": iat, "exp": iat + MEMBER_CODE_TTL_S, "jti": uuid7()}
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


def shopper_id(shopper: dict[str, Any]) -> tuple[str, str]:
    """How a shopper from the spec identifies: ("code", card or member QR) or ("phone", ...)."""
    if "member_jwk" in shopper:
        return "code", member_code(shopper["member_jwk"], str(shopper["customer"]),
                                   shopper.get("kid"))
    if "card" in shopper:
        return "code", str(shopper["card"])
    if "phone" in shopper:
        return "phone", str(shopper["phone"])
    raise ValueError(f"a shopper needs card, phone or member_jwk: {shopper!r}")


def shopper_label(shopper: dict[str, Any]) -> str:
    if "member_jwk" in shopper:
        return f"member {shopper['customer']}"
    if "card" in shopper:
        return f"card {shopper['card']}"
    return f"phone {shopper.get('phone')}"


def coupon_codes(spec: dict[str, Any]) -> list[str]:
    return [c if isinstance(c, str) else str(c["code"]) for c in spec.get("coupons", [])]


def looks_like_member_code(code: str) -> bool:
    """A scan that identifies the shopper: a `member+jwt` or a loyalty card's plain digits."""
    if code.isdigit():
        return True
    try:
        return jwt.get_unverified_header(code).get("typ") == "member+jwt"
    except jwt.InvalidTokenError:
        return False


@dataclass
class Checkout:
    """One open sale at a lane: the basket, the shopper and the coupons reserved for it."""

    lane: Lane
    currency: str = "EUR"
    txn: str = field(default_factory=new_txn_id)
    lines: dict[str, int] = field(default_factory=dict)  # sku -> qty, in scan order
    customer: dict[str, Any] | None = None
    wallet: list[dict[str, Any]] = field(default_factory=list)
    coupons: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> coupon.apply data
    opened: bool = False  # the edge has heard of this sale (a shopper or a coupon)

    def add(self, product: Product, qty: int = 1) -> None:
        self.lines[product.sku] = self.lines.get(product.sku, 0) + qty

    def basket(self) -> dict[str, Any]:
        return basket([{"sku": sku, "qty": qty, "unit_minor": BY_SKU[sku].unit_minor,
                        "categories": list(BY_SKU[sku].categories), "name": BY_SKU[sku].name}
                       for sku, qty in self.lines.items()], self.currency)

    @property
    def due_minor(self) -> int:
        discounts = sum(int(c.get("discount_minor", 0)) for c in self.coupons.values())
        return max(0, int(self.basket()["total_minor"]) - discounts)

    def identify(self, code: str | None = None, phone: str | None = None) -> dict[str, Any]:
        reply = self.lane.identify(self.txn, code=code, phone=phone)
        self.opened = True
        self.customer = reply.get("customer") or None
        self.wallet = list(reply.get("wallet") or [])
        return reply

    def apply(self, code: str) -> dict[str, Any]:
        reply = self.lane.apply_coupon(self.txn, code, self.basket())
        self.opened = True
        self.coupons[code] = reply
        return reply

    def remove(self, code: str) -> dict[str, Any]:
        reply = self.lane.remove_coupon(self.txn, str(self.coupons[code]["reservation"]))
        del self.coupons[code]
        return reply

    def pay(self) -> dict[str, Any]:
        """Pay the amount due by card."""
        return self.lane.complete(self.txn, self.basket(), [tender("card", self.due_minor)],
                                  total_minor=self.due_minor)

    def void(self) -> dict[str, Any]:
        """Cancel the sale at the edge; a sale the edge never heard of just goes away."""
        if not self.opened:
            return {}
        try:
            return self.lane.void(self.txn)
        except Refused as exc:
            if exc.code != "txn_unknown":
                raise
            return {}

    def money(self, minor: int) -> str:
        return money(minor, self.currency, LOCALE)


def customer_label(customer: dict[str, Any] | None) -> str:
    if not customer:
        return "guest"
    tier = f" ({customer['tier']})" if customer.get("tier") else ""
    return f"{customer.get('display_name') or customer.get('id')}{tier}"


def scripted_checkout(lane_id: str, lane: Lane, rng: random.Random,
                      shoppers: list[dict[str, Any]], coupons: list[str],
                      currency: str = "EUR") -> str:
    """Run one random checkout and return its log line. Refusals are outcomes, not errors."""
    sale = Checkout(lane, currency)
    for product in rng.sample(CATALOGUE, rng.randint(1, 6)):
        sale.add(product, rng.choice((1, 1, 1, 2, 3)))
    who = "guest"
    if shoppers and rng.random() < 0.7:
        shopper = rng.choice(shoppers)
        how, value = shopper_id(shopper)
        try:
            sale.identify(**{how: value})
            who = customer_label(sale.customer)
        except Refused as exc:
            who = f"{shopper_label(shopper)} not recognised ({exc.code}: {exc.message})"
    candidates = [str(c["code"]) for c in sale.wallet if c.get("code")]
    tries = [rng.choice(candidates)] if candidates and rng.random() < 0.8 else []
    if coupons and rng.random() < 0.5:
        tries.append(rng.choice(coupons))
    outcomes = []
    for code in tries:
        short = code if len(code) <= 16 else code[:12] + "…"
        try:
            got = sale.apply(code)
            outcomes.append(f"{got.get('description') or short} -"
                            f"{sale.money(int(got.get('discount_minor', 0)))}")
        except Refused as exc:
            outcomes.append(f"{short} refused: {exc.message} [{exc.code}]")
    coupon_part = "; ".join(outcomes) or "no coupon"
    total = sale.money(sale.due_minor)
    if rng.random() < 0.05:
        sale.void()
        return f"lane {lane_id}: {who} | {coupon_part} | walked away, {total} voided"
    try:
        done = sale.pay()
    except Refused as exc:
        return f"lane {lane_id}: {who} | {coupon_part} | payment refused: {exc.message}"
    redeemed = len(done.get("redemptions") or [])
    job = (done.get("receipt") or {}).get("job")
    return (f"lane {lane_id}: {who} | {coupon_part} | paid {total} by card, "
            f"{redeemed} redeemed, receipt {job or 'none'}")


class Simulator:
    """Keeps the simulated devices connected; lanes run scripted checkouts against the edge."""

    def __init__(self, spec: dict[str, Any], ping_every: float = 10.0,
                 checkout_every: float = 8.0, http_url: str | None = None,
                 only: str | None = None) -> None:
        self.spec = spec
        self.ping_every = ping_every
        self.checkout_every = checkout_every
        self.http_url = http_url
        self.only = only
        self.stop = threading.Event()
        self.devices: list[DeviceClient] = []
        self.lanes: dict[str, Lane] = {}
        self._threads: list[threading.Thread] = []
        self._http: list[HttpTransport] = []

    def start(self) -> None:
        for d in self.spec["devices"]:
            if self.only is not None and (d["kind"], d["id"]) != ("pos", self.only):
                continue
            client = DeviceClient(self.spec["store"], d["kind"], d["id"], self.spec["mqtt_url"],
                                  d["username"], d["password"], keepalive=10,
                                  model=MODELS.get(d["kind"]))
            client.status.update(EXTRA_STATUS.get(d["kind"], {}))
            while not self.stop.is_set():
                try:
                    client.connect(timeout=5)
                    break
                except DeviceError as exc:
                    log.warning("%s; retrying", exc)
            self.devices.append(client)
            if d["kind"] == "pos":
                self.lanes[d["id"]] = Lane(self._transport(client, d["password"]))
            log.info("%s %s online", d["kind"], d["id"])

    def _transport(self, client: DeviceClient, password: str) -> Transport:
        if self.http_url is None:
            return MqttTransport(client)
        http = HttpTransport(self.http_url, client.device_id, password)
        self._http.append(http)
        return http

    def run(self) -> None:
        if self.checkout_every > 0:
            for lane_id, lane in self.lanes.items():
                thread = threading.Thread(target=self._checkouts, args=(lane_id, lane),
                                          name=f"checkouts-{lane_id}")
                thread.start()
                self._threads.append(thread)
        while not self.stop.wait(self.ping_every):
            for device in (d for d in self.devices if d.kind == "pos"):
                try:
                    reply = device.request("ping", timeout=3)
                    if not reply["ok"]:
                        log.warning("lane %s: edge said %s", device.device_id, reply["error"])
                except TimeoutError:
                    log.warning("lane %s: the edge did not answer a ping", device.device_id)

    def _checkouts(self, lane_id: str, lane: Lane) -> None:
        rng = random.Random()
        shoppers = list(self.spec.get("shoppers", []))
        coupons = coupon_codes(self.spec)
        currency = str(self.spec.get("currency", "EUR"))
        # Jitter keeps the lanes from all checking out in the same instant.
        while not self.stop.wait(self.checkout_every * rng.uniform(0.5, 1.5)):
            try:
                log.info("%s", scripted_checkout(lane_id, lane, rng, shoppers, coupons,
                                                 currency))
            except EdgeUnreachable as exc:
                log.warning("lane %s: checkout abandoned: %s", lane_id, exc)
            except LaneError as exc:
                log.error("lane %s: %s", lane_id, exc)
            except Exception:
                log.exception("lane %s: the scripted checkout failed", lane_id)

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for http in self._http:
            http.close()
        for client in self.devices:
            client.close()


# ---------------------------------------------------------------- interactive lane

HELP = """Commands:
  scan CODE        a member QR or loyalty card identifies the shopper; anything else is a coupon
  phone NUMBER     identify the shopper by phone
  shopper N        identify as shopper N from the spec file (a fresh member QR is signed)
  add SKU [QTY]    put an item in the basket (see `items`)
  remove CODE      take a coupon off again
  basket           show the sale so far
  items            the catalogue
  pay              pay by card and finish the sale
  void             cancel the sale
  quit             leave (an open sale is voided)"""


class Terminal:
    """One lane driven by a person typing commands; every reply is printed for them."""

    def __init__(self, lane_id: str, lane: Lane, spec: dict[str, Any],
                 out: TextIO = sys.stdout) -> None:
        self.lane_id = lane_id
        self.lane = lane
        self.shoppers: list[dict[str, Any]] = list(spec.get("shoppers", []))
        self.currency = str(spec.get("currency", "EUR"))
        self.out = out
        self.sale = Checkout(lane, self.currency)
        self.commands: dict[str, Callable[[list[str]], None]] = {
            "scan": self.scan, "phone": self.phone, "shopper": self.shopper, "add": self.add,
            "remove": self.remove, "basket": self.show, "items": self.items, "pay": self.pay,
            "void": self.void, "help": lambda _: self.say(HELP)}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def loop(self, stdin: TextIO) -> None:
        self.say(f"Lane {self.lane_id} ready; `help` lists the commands.")
        while True:
            self.out.write(f"{self.lane_id}> ")
            self.out.flush()
            line = stdin.readline()
            if not line:
                self.say("")
                break
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            self.handle(words)
        self.leave()

    def handle(self, words: list[str]) -> None:
        command = self.commands.get(words[0].lower())
        if command is None:
            self.say(f"Unknown command {words[0]!r}; `help` lists them.")
            return
        try:
            command(words[1:])
        except Refused as exc:
            self.say(f"  Refused: {exc.message} [{exc.code}]")
        except LaneError as exc:
            self.say(f"  Problem: {exc}")
        except (ValueError, IndexError) as exc:
            self.say(f"  {exc or 'Missing argument'}; `help` lists the commands.")

    def leave(self) -> None:
        if self.sale.opened:
            try:
                self.sale.void()
                self.say("Open sale voided.")
            except LaneError as exc:
                self.say(f"Could not void the open sale: {exc}")

    def _identified(self, reply: dict[str, Any]) -> None:
        self.say(f"  Hello {customer_label(self.sale.customer)}, "
                 f"{(reply.get('customer') or {}).get('points', 0)} points.")
        for c in self.sale.wallet:
            self.say(f"  wallet: {c.get('description') or c.get('campaign')} — "
                     f"scan {c.get('code')}")
        for offer in reply.get("offers") or []:
            self.say(f"  offer: {offer.get('description') or offer}")

    def scan(self, args: list[str]) -> None:
        code = args[0]
        if looks_like_member_code(code):
            self._identified(self.sale.identify(code=code))
            return
        got = self.sale.apply(code)
        self.say(f"  {got.get('description') or got.get('coupon')}: "
                 f"-{self.sale.money(int(got.get('discount_minor', 0)))}; "
                 f"due {self.sale.money(self.sale.due_minor)}")

    def phone(self, args: list[str]) -> None:
        self._identified(self.sale.identify(phone=args[0]))

    def shopper(self, args: list[str]) -> None:
        if not self.shoppers:
            raise ValueError("The spec file lists no shoppers")
        n = int(args[0]) if args else 1
        if not 1 <= n <= len(self.shoppers):
            raise ValueError(f"Shopper must be 1 to {len(self.shoppers)}")
        how, value = shopper_id(self.shoppers[n - 1])
        self._identified(self.sale.identify(**{how: value}))

    def add(self, args: list[str]) -> None:
        product = BY_SKU.get(args[0])
        if product is None:
            raise ValueError(f"No item {args[0]!r}; `items` lists the catalogue")
        qty_text = args[1] if len(args) > 1 else "1"
        if not qty_text.isdigit() or int(qty_text) < 1:
            raise ValueError(f"Quantity must be a whole number, 1 or more, not {qty_text!r}")
        qty = int(qty_text)
        self.sale.add(product, qty)
        self.say(f"  {qty} x {product.name} {self.sale.money(product.unit_minor)}; "
                 f"total {self.sale.money(self.sale.basket()['total_minor'])}")

    def remove(self, args: list[str]) -> None:
        if args[0] not in self.sale.coupons:
            raise ValueError(f"Coupon {args[0]!r} is not on this sale")
        self.sale.remove(args[0])
        self.say(f"  Coupon removed; due {self.sale.money(self.sale.due_minor)}")

    def show(self, _args: list[str]) -> None:
        self.say(f"  Sale {self.sale.txn}, shopper {customer_label(self.sale.customer)}")
        for sku, qty in self.sale.lines.items():
            p = BY_SKU[sku]
            self.say(f"  {qty:>3} x {p.name:<28} {self.sale.money(qty * p.unit_minor):>10}")
        for c in self.sale.coupons.values():
            self.say(f"  coupon {c.get('description') or c.get('coupon')}: "
                     f"-{self.sale.money(int(c.get('discount_minor', 0)))}")
        self.say(f"  due {self.sale.money(self.sale.due_minor)}")

    def items(self, _args: list[str]) -> None:
        for p in CATALOGUE:
            self.say(f"  {p.sku:<8} {p.name:<28} {self.sale.money(p.unit_minor):>8}  "
                     f"{', '.join(p.categories)}")

    def pay(self, _args: list[str]) -> None:
        if not self.sale.lines:
            raise ValueError("The basket is empty")
        due = self.sale.money(self.sale.due_minor)
        done = self.sale.pay()
        self.say(f"  Paid {due} by card; {len(done.get('redemptions') or [])} coupon(s) "
                 f"redeemed; receipt job {(done.get('receipt') or {}).get('job')}")
        self.sale = Checkout(self.lane, self.currency)

    def void(self, _args: list[str]) -> None:
        self.sale.void()
        self.say("  Sale voided.")
        self.sale = Checkout(self.lane, self.currency)


# ---------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pos_bridge.simulator",
                                description="Simulated store devices on the real bus.")
    p.add_argument("spec", metavar="DEVICES.json", type=Path)
    p.add_argument("--interactive", metavar="LANE_ID",
                   help="drive this lane from the terminal instead of simulating the store")
    p.add_argument("--checkout-every", metavar="SECONDS", type=float, default=8.0,
                   help="mean seconds between scripted checkouts per lane; 0 turns them off")
    p.add_argument("--http", metavar="URL",
                   help="lanes call the edge over HTTP at URL instead of MQTT")
    return p


def _goodbye_on_sigterm(*_: Any) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    spec = json.loads(args.spec.read_text())
    if args.interactive:
        lanes = [d["id"] for d in spec["devices"] if d["kind"] == "pos"]
        if args.interactive not in lanes:
            print(f"no lane {args.interactive!r} in {args.spec}; lanes: {', '.join(lanes)}",
                  file=sys.stderr)
            return 2
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s simulator: %(message)s")
        logsafe.stamp()
        sim = Simulator(spec, http_url=args.http, only=args.interactive)
        signal.signal(signal.SIGTERM, _goodbye_on_sigterm)
        # Ctrl-C ends the session even when started from a script that ignores SIGINT.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        terminal: Terminal | None = None
        try:
            sim.start()
            terminal = Terminal(args.interactive, sim.lanes[args.interactive], spec)
            terminal.loop(sys.stdin)
        except (KeyboardInterrupt, SystemExit):
            print()
            if terminal is not None:
                terminal.leave()
        finally:
            sim.close()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s simulator: %(message)s")
    logsafe.stamp()  # ISO 8601 times with the offset, as the edge's lines
    sim = Simulator(spec, checkout_every=args.checkout_every, http_url=args.http)
    signal.signal(signal.SIGTERM, lambda *_: sim.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sim.stop.set())
    try:
        sim.start()
        sim.run()
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
