"""`edge demo`: a whole store on this machine — broker, edge, simulated lanes and devices.

Everything runs as child processes, as on a store box; Ctrl-C stops them in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from edge.accounts import add_user
from edge.app.printers import add_printer
from edge.broker import BrokerProcess, wait_for_port
from edge.datadir import DataDir, write_private
from edge.devices import enrol, sync_broker_files
from edge.scanners import add_scanner, target_of
from edge.settings import Settings, load_settings
from edge.store import Store
from edge.supervise import stop_process
from edge.tls import StoreTLS, proxy_site, standalone_nginx
from store_contract.errors import NotFound, StartupError
from store_contract.jws import COUPON_TYP, MEMBER_TYP, SigningKey
from store_demo.hub_seed import REGION as HUB_DEMO_REGION

DEMO_DEVICES = [("pos", "lane-1"), ("pos", "lane-2")]
# The counter: a lane the staff checkout page works as (not simulated), with a camera
# scanner (the real scanner service) pointed at a folder: what lies there is in view.
COUNTER_LANE, CAMERA_SCANNER = "lane-3", "scanner-1"
# The shopper kiosk by the entrance: its own camera scanner (another watched folder) and
# printer; a browser opening /kiosk/ is paired with it by a manager.
KIOSK, KIOSK_SCANNER, KIOSK_PRINTER = "kiosk-1", "scanner-2", "printer-3"
# The kiosk's shopper, whom the simulated lanes never use: her offers stay hers to clip.
KIOSK_SHOPPER = "c-emma"
MEMBER_QR_RENEW_S = 60  # the app renews its member QR; the demo's picture of it too
# Pictures to hold in front of it: (file, what it shows, how: a format zxing-cpp writes).
DEMO_CODES = [("anna-card.png", "4000123412341234", "Code128"),
              ("emma-card.png", "4000123412340005", "Code128"),
              ("nappies.png", "4015400", "Code128"),
              ("save10.png", "SAVE10", "QRCode")]
# Each lane prints on its own virtual network printer, served by the edge like a real one;
# two printer models, so the receipts show both profiles' code pages at work.
DEMO_PRINTERS = [("printer-1", "TM-T20II", ["lane-1", "staff-web", COUNTER_LANE]),
                 ("printer-2", "TM-T88V", ["lane-2"]),
                 (KIOSK_PRINTER, "TM-T20II", [])]
DEMO_APP_KID = "demo-app-1"
DEMO_SHOPPERS = [
    {"id": "c-anna", "display_name": "Anna", "tier": "gold", "points": 1240,
     "card": "4000 1234 1234 1234", "phone": "+49 151 23456789",
     "consent": {"personalised": True, "marketing": True}, "segments": ["coffee-lovers"]},
    {"id": "c-ben", "display_name": "Ben", "tier": "silver", "points": 310,
     "card": "4000 1234 5678 0002", "consent": {"personalised": True}},
    {"id": "c-chloe", "display_name": "Chloé", "tier": "member", "points": 45,
     "phone": "+49 160 5550199"},
    {"id": "c-deniz", "display_name": "Deniz", "tier": "gold", "points": 2890,
     "card": "4000 1234 5678 0003", "consent": {"personalised": True}},
    {"id": KIOSK_SHOPPER, "display_name": "Emma", "tier": "gold", "points": 560,
     "card": "4000 1234 1234 0005", "consent": {"personalised": True, "marketing": False}},
]
DEMO_CAMPAIGNS = [
    {"id": "cmp-save10", "name": "Save 10", "description": "10% off a basket of €20 or more",
     "code": "SAVE10", "disc": {"kind": "percent", "value": 10}, "min_minor": 2000,
     "offer": True},
    {"id": "cmp-dairy", "name": "Dairy week", "description": "20% off dairy",
     "offer": True, "tiers": ["gold", "silver"], "disc": {"kind": "percent", "value": 20},
     "cats": ["dairy"], "stack": True},
    {"id": "cmp-coffee", "name": "Coffee €2 off", "description": "€2 off ground coffee",
     "disc": {"kind": "amount", "value_minor": 200, "currency": "EUR"}, "skus": ["8000070"],
     "offer": True, "segments": ["coffee-lovers"]},
    {"id": "cmp-fruit", "name": "Fruit bowl", "description": "€1 off fruit",
     "disc": {"kind": "amount", "value_minor": 100, "currency": "EUR"}, "cats": ["fruit"],
     "offer": True},
]


def _port_or_free(port: int) -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings) -> dict[str, str]:
    return settings.with_overrides(log_level="WARNING").environ()


def _demo_app_key(datadir: DataDir) -> SigningKey:
    """The demo's stand-in for the shopper app's signing key (the app signs coupons and
    member QR codes; the edge only ever holds the public half)."""
    jwk = datadir.secret_json("demo-app-key", lambda: {
        **json.loads(OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate())), "kid": DEMO_APP_KID})
    private = OKPAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(private, Ed25519PrivateKey)
    return SigningKey(DEMO_APP_KID, private)


def _coupon(app: SigningKey, name: str, now: int, **claims: Any) -> str:
    body = {"jti": f"demo-{name}-{now}", "cmp": f"cmp-{name}", "nbf": now - 60,
            "exp": now + 30 * 86400, **claims}
    return app.sign(body, COUPON_TYP)


def _seed(settings: Settings, app: SigningKey) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Shoppers with app coupons in their wallets, for the hub to send the store.

    Returns what the simulated lanes scan — shoppers (cards, phones, member codes) and loose
    coupons (a plain campaign code, a flyer coupon for many, a single-use bearer coupon) —
    and the shoppers' records as the CRM holds them (home region: the demo's).
    """
    now = int(time.time())
    records = []
    for shopper in DEMO_SHOPPERS:
        cid = str(shopper["id"])
        wallet = [
            _coupon(app, f"birthday-{cid}", now, sub=cid, disc={"kind": "amount",
                    "value_minor": 300, "currency": "EUR"}, min_minor=1500),
            _coupon(app, f"dairy-{cid}", now, sub=cid, cats=["dairy"], stack=True,
                    disc={"kind": "percent", "value": 20}),
        ]
        records.append({**shopper, "wallet": wallet, "region": HUB_DEMO_REGION})
    scans = {
        "currency": settings.currency,
        "shoppers": [{"card": DEMO_SHOPPERS[1]["card"]}, {"phone": DEMO_SHOPPERS[2]["phone"]},
                     {"card": DEMO_SHOPPERS[3]["card"]}, {"card": "4000 9999 9999 9999"},
                     {"member_jwk": {**json.loads(OKPAlgorithm.to_jwk(app.private)),
                                     "kid": app.kid}, "customer": "c-anna", "kid": app.kid}],
        "coupons": ["SAVE10", "HELLO5",
                    _coupon(app, "flyer", now, max=1000, disc={"kind": "percent", "value": 5}),
                    _coupon(app, "coffee", now, skus=["8000070"], disc={
                        "kind": "amount", "value_minor": 200, "currency": "EUR"}),
                    _coupon(app, "one-off", now, disc={"kind": "amount", "value_minor": 500,
                                                       "currency": "EUR"}, min_minor=2500)],
    }
    return scans, records


def _load_products(store: Store) -> None:
    """The simulated lanes' catalogue as the store's product list, as `edge products import`
    loads it: the staff checkout page then knows the items the lanes sell."""
    from edge.products import upsert_products
    from pos_bridge.simulator import CATALOGUE

    store.write(lambda db: upsert_products(db, list(CATALOGUE)))


def _prepare(settings: Settings, printer_ports: dict[str, int], hub_env: dict[str, str]
             ) -> tuple[DataDir, str]:
    """Data dir, demo devices and printers, a manager account with a fresh password; the
    shoppers and campaigns go to the hub, which sends them to the store as for a real one."""
    datadir = DataDir(settings.data_path).ensure()
    store = Store(datadir.database)
    try:
        datadir.edge_mqtt_credentials()
        enrolled = [enrol(settings, datadir, store, kind, dev_id, rotate=True).to_dict()
                    for kind, dev_id in DEMO_DEVICES]
        enrol(settings, datadir, store, "pos", COUNTER_LANE, rotate=True)
        _, camera = add_scanner(settings, datadir, store, CAMERA_SCANNER,
                                target_of(COUNTER_LANE, None), rotate=True)
        _write_codes(datadir.root / "codes")
        for printer_id, profile, lanes in DEMO_PRINTERS:
            add_printer(settings, datadir, store, printer_id, lanes=lanes, profile=profile,
                        connection=f"tcp://127.0.0.1:{printer_ports[printer_id]}")
        enrolled.append(_kiosk(settings, datadir, store).to_dict())
        _, kiosk_camera = add_scanner(settings, datadir, store, KIOSK_SCANNER,
                                      target_of(None, KIOSK), rotate=True)
        password = secrets.token_urlsafe(9)
        add_user(store, "manager", password, "manager", replace=True)
        tls = StoreTLS.of(datadir)
        tls.ensure(settings.store_id, ["localhost", "127.0.0.1"])
        sync_broker_files(settings, datadir, store)
        app = _demo_app_key(datadir)
        write_private(Path(settings.trusted_keys),
                      json.dumps({"keys": [app.public_jwk()]}, indent=2), replace=True)
        scans, shoppers = _seed(settings, app)
        _feed_hub(hub_env, app, shoppers, settings.country, settings.locale)
        _load_products(store)
    finally:
        store.close()
    # The simulated lanes reach the broker as lanes on the store LAN do: TLS, store CA.
    lanes_url = (f"mqtts://localhost:{settings.broker_tls_port}"
                 f"?cafile={quote(str(tls.ca_file))}")
    spec = {"store": settings.store_id, "mqtt_url": lanes_url, "devices": enrolled,
            "camera": camera.to_dict(), "kiosk_camera": kiosk_camera.to_dict(), **scans}
    write_private(datadir.root / "demo-devices.json", json.dumps(spec, indent=2), replace=True)
    return datadir, password


def _kiosk(settings: Settings, datadir: DataDir, store: Store) -> Any:
    """The entrance kiosk, enrolled once (its pairing outlives a demo restart); its device
    login, new each run, for the simulator, which stands in for the kiosk box's presence."""
    from edge.devices import remove
    from edge.kiosks import add_kiosk, get_kiosk

    if get_kiosk(store, KIOSK) is None:
        with contextlib.suppress(NotFound):  # the simulated kiosk of an older demo
            remove(settings, datadir, store, "kiosk", KIOSK)
        return add_kiosk(settings, datadir, store, KIOSK, printer=KIOSK_PRINTER,
                         langs=("en", "de"))[1]
    return enrol(settings, datadir, store, "kiosk", KIOSK, rotate=True)


def _draw(text: str, how: str) -> Any:
    """A code as a picture (zxing-cpp draws it), ready to save."""
    import numpy as np
    import zxingcpp
    from PIL import Image

    barcode = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, how))
    return Image.fromarray(np.asarray(barcode.to_image(scale=4, add_quiet_zones=True)))


def _renew_member_qr(app: SigningKey, folder: Path, stopping: Any) -> None:
    """Emma's app member QR as a picture, signed anew every minute as the app renews it (a
    member code lives five minutes at most); written whole, then moved into place."""
    while not stopping():
        now = int(time.time())
        code = app.sign({"sub": KIOSK_SHOPPER, "iat": now, "exp": now + 300,
                         "jti": secrets.token_hex(16)}, MEMBER_TYP)
        part = folder / ".emma-app.png.part"
        _draw(code, "QRCode").save(part, format="PNG")
        part.replace(folder / "emma-app.png")
        for _ in range(MEMBER_QR_RENEW_S * 10):
            if stopping():
                return
            time.sleep(0.1)


def _write_codes(folder: Path) -> None:
    """The demo's pictures of codes: a loyalty card, a product, a coupon."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text, how in DEMO_CODES:
        _draw(text, how).save(folder / name)


def _start_camera(settings: Settings, datadir: DataDir, lanes_url: str,
                  scanner: str = CAMERA_SCANNER, folder: str = "camera",
                  login_key: str = "camera") -> tuple[subprocess.Popen[Any], Path]:
    """The real scanner service with one camera: a folder of the data dir."""
    camera_dir = datadir.root / folder
    camera_dir.mkdir(exist_ok=True)
    for left in camera_dir.iterdir():  # nothing in view at the start
        left.unlink()
    login = json.loads((datadir.root / "demo-devices.json").read_text())[login_key]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pos_bridge.scanner", "run", "--store", settings.store_id,
         "--device", scanner, "--mqtt-url", lanes_url, "--username", login["username"],
         "--camera", f"watch:{camera_dir},hold_off=1", "--log-level", "WARNING"],
        env={**os.environ, "SCANNER_MQTT_PASSWORD": login["password"]},
        stdout=subprocess.DEVNULL, start_new_session=True)
    return proc, camera_dir


def _wait_healthy(url: str, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartupError("the edge stopped during start-up; see the lines above")
        try:
            if requests.get(url, timeout=1).json()["broker"]["connected"]:
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise StartupError(f"the edge did not become healthy at {url}")


def _prepare_hub(root: Path, port: int, tz: str, locale: str
                 ) -> tuple[dict[str, str], str, str]:
    """The demo's CRM hub: its environment, this store's token, the manager's password."""
    from cloud_sync.hub.db import HubDB
    from cloud_sync.hub.schema_version import upgrade
    from cloud_sync.hub.settings import load_hub_settings
    from store_demo.hub_seed import seed

    env = {"HUB_DATA_DIR": str(root / "hub"), "HUB_HTTP_PORT": str(port), "HUB_TZ": tz,
           "HUB_LOCALE": locale}
    hub_settings = load_hub_settings(env)
    # The demo's own hub database, made by an older demo maybe: brought up to this
    # version's schema as `edge-hub migrate` would (docs/hub.md, "Upgrading the hub").
    db = HubDB(hub_settings.db_url, check_schema=False)
    try:
        upgrade(db.engine)
    finally:
        db.dispose()
    db = HubDB(hub_settings.db_url)
    password = secrets.token_urlsafe(9)
    try:
        tokens = seed(db, hub_settings, password)
    finally:
        db.dispose()
    return env, tokens["store-1"], password


def _feed_hub(env: dict[str, str], app: SigningKey, shoppers: list[dict[str, Any]],
              country: str, locale: str) -> None:
    """The CRM side of the demo's master data: the hub publishes the demo app's key (and so
    believes redemptions of its coupons), and holds the shoppers and campaigns it sends the
    store through its feed, hashed for the store's region, as `edge-hub keys add`,
    `customers import` and `campaigns import` do for a real chain."""
    from cloud_sync.hub.db import HubDB
    from cloud_sync.hub.feed import import_campaigns, import_customers
    from cloud_sync.hub.keys import add_chain_keys, hub_signing_key
    from cloud_sync.hub.settings import load_hub_settings

    hub_settings = load_hub_settings(env)
    db = HubDB(hub_settings.db_url)
    try:
        add_chain_keys(db, hub_signing_key(hub_settings), app.public_jwk())
        for report in (import_customers(db, [json.dumps(r) for r in shoppers], country),
                       import_campaigns(db, [json.dumps(c) for c in DEMO_CAMPAIGNS], locale)):
            if report["skipped"]:
                raise StartupError(f"demo data refused by the hub: {report['problems']}")
    finally:
        db.dispose()


def _start_proxy(settings: Settings, root: Path, children: list[subprocess.Popen[Any]]
                 ) -> str | None:
    """nginx in front of the edge, as on a store box (docs/operations.md §16.2); the HTTPS
    address of the staff pages, or None without nginx."""
    https_port = _port_or_free(8443)
    command = standalone_nginx(
        proxy_site(settings, https_port, _port_or_free(8088), "127.0.0.1"), root / "nginx")
    if not Path(command[0]).exists():
        return None
    children.append(subprocess.Popen(command, start_new_session=True))
    wait_for_port("127.0.0.1", https_port, 10)
    return f"https://localhost:{https_port}/staff/"


def run_demo(data_dir: str, http_port: int, mqtt_port: int, hub_port: int = 8090) -> None:
    mqtt_port = _port_or_free(mqtt_port)
    http_port = _port_or_free(http_port)
    hub_port = _port_or_free(hub_port)
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(data_dir=str(root), mqtt_url=f"mqtt://127.0.0.1:{mqtt_port}",
                             http_port=http_port, broker_tls_port=_port_or_free(8883),
                             http_trusted_proxy="127.0.0.1",
                             trusted_keys=str(root / "demo-trusted-keys.json"))
    hub_env, hub_token, hub_password = _prepare_hub(root, hub_port, settings.tz,
                                                     settings.locale)
    settings = settings.with_overrides(hub_url=f"http://127.0.0.1:{hub_port}",
                                       hub_token=hub_token, sync_pull_interval_s=15)
    printer_ports = {printer_id: _port_or_free(9100 + i)
                     for i, (printer_id, _, _) in enumerate(DEMO_PRINTERS)}
    datadir, password = _prepare(settings, printer_ports, hub_env)
    broker = BrokerProcess(settings, datadir, quiet=True).start()
    children: list[subprocess.Popen[Any]] = []
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        hub = subprocess.Popen([sys.executable, "-m", "cloud_sync.hub.cli", "serve"],
                               env={**{k: v for k, v in os.environ.items()
                                       if not k.startswith("HUB_")}, **hub_env},
                               stdout=subprocess.DEVNULL, start_new_session=True)
        children.append(hub)
        wait_for_port("127.0.0.1", hub_port, 30)
        printouts = datadir.root / "printouts"
        for printer_id, profile, _ in DEMO_PRINTERS:
            children.append(subprocess.Popen(
                [sys.executable, "-m", "pos_bridge.virtual_printer", "--port",
                 str(printer_ports[printer_id]), "--profile", profile, "--out",
                 str(printouts / printer_id)], stdout=subprocess.DEVNULL,
                start_new_session=True))
        # The edge's stdout is its one JSON line for scripts (where it listens): not for
        # the person reading the banner.
        edge = subprocess.Popen([sys.executable, "-m", "edge.app.cli", "serve"], env=_env(settings),
                                stdout=subprocess.DEVNULL, start_new_session=True)
        children.append(edge)
        base = f"http://{settings.http_host}:{http_port}"
        wait_for_port(settings.http_host, http_port, 30)
        _wait_healthy(f"{base}/healthz", edge)
        https = _start_proxy(settings, root, children)
        tls_ca = StoreTLS.of(datadir).ca_file
        lan_url = f"mqtts://localhost:{settings.broker_tls_port}?cafile={quote(str(tls_ca))}"
        camera, camera_dir = _start_camera(settings, datadir, lan_url)
        children.append(camera)
        kiosk_camera, kiosk_dir = _start_camera(settings, datadir, lan_url, KIOSK_SCANNER,
                                                "kiosk-camera", "kiosk_camera")
        children.append(kiosk_camera)
        codes = datadir.root / "codes"
        threading.Thread(target=_renew_member_qr, name="member-qr", daemon=True,
                         args=(_demo_app_key(datadir), codes, lambda: stopping)).start()
        sim = subprocess.Popen([sys.executable, "-m", "pos_bridge.simulator",
                                str(datadir.root / "demo-devices.json")], env=_env(settings),
                               start_new_session=True)
        children.append(sim)
        printer_lines = "\n".join(
            f"  {pid} ({profile}) for {', '.join(lanes) or 'the kiosk'}: "
            f"tcp://127.0.0.1:{printer_ports[pid]}"
            f", printouts in {printouts / pid}" for pid, profile, lanes in DEMO_PRINTERS)
        print(f"""
Demo store "{settings.store_name}" ({settings.store_id}) is running.

  Staff pages, HTTPS:   {https or "(install nginx-light for HTTPS in front of the edge)"}
      (nginx with the store's certificate; the browser warns until you trust the store CA)
  Checkout (staff page): {base}/staff/checkout
      sign in as:       manager / {password}
      then type each code into the scan field and press Enter:
                        4000123412341234  Anna's loyalty card
                        4015400           nappies, €13.99
                        4015400           the same again: the basket is €27.98
                        SAVE10            10% off a basket of €20 or more: −€2.80
      and press Redeem: the receipt prints on printer-1 (see Receipts). Shoppers are
      found by phone too: +49 160 5550199 (Chloé), or 0160 5550199.
  Camera scanner:       {CAMERA_SCANNER}, a camera that sees the folder {camera_dir}
      open the checkout of its lane: {base}/staff/checkout?lane={COUNTER_LANE}
      then hold codes in front of it, the newest picture in the folder is the one in
      view, and each is applied on the page without a key press:
        cp {datadir.root / "codes" / "anna-card.png"} {camera_dir}/
        cp {datadir.root / "codes" / "nappies.png"} {camera_dir}/
      take them away for a second and show the nappies again (the same code held in view
      counts once):
        rm {camera_dir}/*.png; sleep 2; cp {datadir.root / "codes" / "nappies.png"} {camera_dir}/
        cp {datadir.root / "codes" / "save10.png"} {camera_dir}/
      the page then shows Anna, two packs of nappies (€27.98) and the coupon
      "{DEMO_CAMPAIGNS[0]["description"]}" (−€2.80).
  Kiosk (shopper screen): {base}/kiosk/  (a touch screen by the entrance)
      it shows a pairing code: enter it for {KIOSK} at {base}/staff/kiosks (as manager),
      and the screen turns to its welcome page. Its camera sees the folder {kiosk_dir}:
        cp {codes / "emma-app.png"} {kiosk_dir}/
      is Emma's app member QR (renewed every minute, as the app does): "Hello, Emma!",
      her points, coupons and offers. Tap "Add to my coupons" or "Print" on
      "{DEMO_CAMPAIGNS[0]["description"]}": the coupon prints on {KIOSK_PRINTER}, as a
      picture in {printouts / KIOSK_PRINTER}. Show a product for its price:
        cp {codes / "nappies.png"} {kiosk_dir}/
      Then redeem the printed coupon at the counter (open its checkout as above):
        cp {codes / "emma-card.png"} {camera_dir}/
        cp {codes / "nappies.png"} {camera_dir}/; sleep 3; rm {camera_dir}/*.png; sleep 2
        cp {codes / "nappies.png"} {camera_dir}/
        cp "$(ls -t {printouts / KIOSK_PRINTER}/*.png | head -1)" {camera_dir}/
  Receipts (staff page): {base}/staff/receipts  (every sale's receipt, with a preview)
  Devices (staff page): {base}/staff/devices
  Devices (API):        curl -u manager:{password} {base}/api/v1/devices
  Sync (staff page):    {base}/staff/sync  (what is waiting for the CRM hub)
  Health:               {base}/healthz
  Metrics:              {base}/metrics
  MQTT broker, LAN:     mqtts://localhost:{settings.broker_tls_port}  (TLS; the lanes use it)
      store CA:         {StoreTLS.of(datadir).ca_file}
      this box only:    mqtt://127.0.0.1:{mqtt_port}  (edge login in
                        {datadir.secrets}/mqtt-edge.json)
  Data:                 {datadir.root}

CRM hub, regional dashboard: http://127.0.0.1:{hub_port}/
      sign in as:       regional / {hub_password}
      two stores of region "north". This one is live: its figures are the demo's sales
      (they appear within seconds) and one sale of yesterday, in which Chloé used the
      single-use coupon Harbour Street also took while offline ("Redemption conflicts").
      "Harbour Street" (store-2) is pre-loaded with two weeks of made-up history.
      hub data:         {root / "hub"}

Simulated devices: {", ".join(f"{k} {i}" for k, i in DEMO_DEVICES)}.
Virtual receipt printers (real ESC/POS over TCP, served by the edge):
{printer_lines}
The lanes run a checkout every few seconds (shoppers, app coupons, refusals): one line each.
Press Ctrl-C to stop.
""", flush=True)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    raise StartupError(f"a demo process stopped unexpectedly: {child.args!r}")
            time.sleep(0.3)
    finally:
        for child in reversed(children):
            stop_process(child)
        broker.stop()
        print("Demo store stopped.", flush=True)
