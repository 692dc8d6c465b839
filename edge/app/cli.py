"""The `edge` command (docs/operations.md). Output that store IT automates with is JSON."""

from __future__ import annotations

import csv
import gc
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from edge.datadir import DataDir
from edge.settings import Settings, load_settings
from edge.store import Store
from edge.tls import StoreTLS, fingerprint, parse_names, proxy_site
from store_contract.console import emit, fails_cleanly_as
from store_contract.errors import BadRequest, NotFound, StartupError

_fails_cleanly = fails_cleanly_as("edge")


T = TypeVar("T")


def _open(settings: Settings) -> tuple[DataDir, Store]:
    datadir = DataDir(settings.data_path).ensure()
    return datadir, Store(datadir.database)


def _on_store(use: Callable[[Store], T]) -> T:
    """What `use` makes of the store's database (opened for it and closed after, as the
    one-step commands need it)."""
    _, store = _open(load_settings())
    try:
        return use(store)
    finally:
        store.close()


@click.group()
def main() -> None:
    """Store edge: run and administer the edge service of one store."""


@main.command()
@_fails_cleanly
def init() -> None:
    """Create EDGE_DATA_DIR: database, secrets and broker files. Safe to run again."""
    from edge.customers import local_bundle
    from edge.devices import sync_broker_files
    from edge.tokens import store_signing_key

    settings = load_settings()
    datadir, store = _open(settings)
    datadir.edge_mqtt_credentials()
    datadir.secret_token("session-key")
    local_bundle(datadir)
    store_signing_key(datadir, settings.store_id)
    tls = StoreTLS.of(datadir)
    tls.ensure(settings.store_id, parse_names(settings.tls_names, settings.broker_host))
    sync_broker_files(settings, datadir, store)
    store.close()
    emit({"store": settings.store_id, "data_dir": str(datadir.root),
           "mosquitto_conf": str(datadir.mosquitto / "mosquitto.conf"),
           "ca_file": str(tls.ca_file), "ca_sha256": fingerprint(tls.cas()[0])})


@main.group("tls")
def tls_group() -> None:
    """The store's CA and the box's server certificate (docs/operations.md §16.2)."""


@tls_group.command("show")
@_fails_cleanly
def tls_show() -> None:
    """Print the certificate files, names, expiry dates and fingerprints."""
    settings = load_settings()
    emit(StoreTLS.of(DataDir(settings.data_path)).describe())


@tls_group.command("proxy-config")
@click.option("--https-port", type=click.IntRange(1, 65535), default=443, show_default=True)
@click.option("--http-port", type=click.IntRange(1, 65535), default=80, show_default=True,
              help="Plain HTTP, which only redirects to HTTPS.")
@click.option("--listen", "address", default="", help="Address to listen on (default: all).")
@_fails_cleanly
def tls_proxy_config(https_port: int, http_port: int, address: str) -> None:
    """Print the nginx site that serves the staff pages over HTTPS with the store's certificate.

    Write it to /etc/nginx/sites-enabled/store-edge and set http_trusted_proxy = "127.0.0.1".
    """
    settings = load_settings()
    click.echo(proxy_site(settings, https_port, http_port, address), nl=False)


@tls_group.command("rotate")
@click.option("--ca", "new_ca", is_flag=True,
              help="Stage a new CA beside the current one (give devices the new ca.crt, then "
                   "run `edge tls rotate` again).")
@_fails_cleanly
def tls_rotate(new_ca: bool) -> None:
    """A new server key and certificate from the newest CA; the broker reloads it at once."""
    from edge.broker import reload_broker

    settings = load_settings()
    datadir = DataDir(settings.data_path).ensure()
    tls = StoreTLS.of(datadir)
    if not tls.ready():
        raise StartupError(f"no certificates in {tls.folder}: run `edge init` first")
    if new_ca:
        tls.stage_ca(settings.store_id)
        click.echo("edge: a new CA is staged; copy ca.crt (both CAs) to every device, then run "
                   "`edge tls rotate`", err=True)
    else:
        tls.issue_server(settings.store_id, parse_names(settings.tls_names,
                                                         settings.broker_host))
        reloaded = reload_broker(datadir)
        click.echo("edge: new server certificate; " + (
            "the broker reloaded it" if reloaded else "no running broker to reload (it reads "
            "the new files when it starts)") + "; reload the HTTPS proxy too (systemctl reload "
            "nginx)", err=True)
    emit(tls.describe())


@main.group()
def devices() -> None:
    """Enrol, list and remove devices."""


@devices.command("add")
@click.argument("kind")
@click.argument("device_id", metavar="ID")
@click.option("--rotate", is_flag=True, help="Give an enrolled device a new password.")
@_fails_cleanly
def devices_add(kind: str, device_id: str, rotate: bool) -> None:
    """Enrol a device; prints {"kind","id","username","password"}."""
    from edge.devices import enrol

    settings = load_settings()
    datadir, store = _open(settings)
    result = enrol(settings, datadir, store, kind, device_id, rotate=rotate)
    store.close()
    emit(result.to_dict())


@devices.command("list")
@_fails_cleanly
def devices_list() -> None:
    """Print the enrolled devices and their presence as a JSON array."""
    from edge.devices import list_devices

    emit(_on_store(list_devices))


@devices.command("remove")
@click.argument("kind")
@click.argument("device_id", metavar="ID")
@_fails_cleanly
def devices_remove(kind: str, device_id: str) -> None:
    """Remove a device and its broker login."""
    from edge.devices import remove

    settings = load_settings()
    datadir, store = _open(settings)
    remove(settings, datadir, store, kind, device_id)
    store.close()
    emit({"kind": kind, "id": device_id, "removed": True})


@main.group()
def printers() -> None:
    """Receipt printers and the lanes that print on them."""


@printers.command("add")
@click.argument("printer_id", metavar="ID")
@click.option("--lane", "lanes", multiple=True,
              help="A lane whose receipts print here (repeat for several); none for a "
                   "kiosk's printer (`edge kiosks add --printer`).")
@click.option("--connect", "connection", default=None,
              help="tcp://HOST:9100 (or file:///dev/usb/lp0): the edge runs this printer's "
                   "service itself. Leave out for a printer served by its own pos_bridge "
                   "process (USB, serial at the till).")
@click.option("--profile", default="default", show_default=True,
              help="python-escpos printer profile, e.g. TM-T88V, TM-T20II.")
@click.option("--rotate", is_flag=True, help="Give the printer's login a new password.")
@_fails_cleanly
def printers_add(printer_id: str, lanes: tuple[str, ...], connection: str | None, profile: str,
                 rotate: bool) -> None:
    """Add or change a printer; prints the printer, and the login for its own process the
    first time (a printer the edge serves with --connect has a login only the edge knows)."""
    from edge.app.printers import add_printer

    settings = load_settings()
    datadir, store = _open(settings)
    printer, enrolment = add_printer(settings, datadir, store, printer_id, lanes=list(lanes),
                                     connection=connection, profile=profile, rotate=rotate)
    store.close()
    emit({**printer.to_dict(), **({"username": enrolment.username,
                                    "password": enrolment.password} if enrolment else {})})


@printers.command("list")
@_fails_cleanly
def printers_list() -> None:
    """Print the printers as a JSON array."""
    from edge.app.printers import list_printers

    emit([p.to_dict() for p in _on_store(list_printers)])


@printers.command("remove")
@click.argument("printer_id", metavar="ID")
@_fails_cleanly
def printers_remove(printer_id: str) -> None:
    """Remove a printer and its login; its lanes then have no printer."""
    from edge.app.printers import forget_hosted_login, remove_printer
    from edge.devices import remove
    from store_contract.errors import NotFound

    settings = load_settings()
    datadir, store = _open(settings)
    found = remove_printer(store, printer_id)
    forget_hosted_login(datadir, printer_id)
    try:
        remove(settings, datadir, store, "printer", printer_id)
    except NotFound:
        if not found:
            raise NotFound(f"No printer {printer_id!r} is set up.") from None
    store.close()
    emit({"id": printer_id, "removed": True})


@main.group()
def scanners() -> None:
    """Barcode and QR scanners and the lane or kiosk each one sends its scans to."""


def _target(lane: str | None, kiosk: str | None) -> Any:
    from edge.scanners import target_of

    return target_of(lane, kiosk)


_lane_option = click.option("--lane", default=None, help="The POS lane (an enrolled pos "
                            "device) whose scans these are.")
_kiosk_option = click.option("--kiosk", default=None, help="The kiosk (an enrolled kiosk "
                             "device) whose scans these are.")


@scanners.command("add")
@click.argument("scanner_id", metavar="ID")
@_lane_option
@_kiosk_option
@click.option("--rotate", is_flag=True, help="Give an enrolled scanner a new password.")
@_fails_cleanly
def scanners_add(scanner_id: str, lane: str | None, kiosk: str | None, rotate: bool) -> None:
    """Enrol a scanner and assign it to a lane or a kiosk; prints the scanner and its login
    {"username","password"} for `python -m pos_bridge.scanner`."""
    from edge.scanners import add_scanner

    target = _target(lane, kiosk)
    settings = load_settings()
    datadir, store = _open(settings)
    scanner, enrolment = add_scanner(settings, datadir, store, scanner_id, target,
                                     rotate=rotate)
    store.close()
    emit({**scanner, "username": enrolment.username, "password": enrolment.password})


@scanners.command("assign")
@click.argument("scanner_id", metavar="ID")
@_lane_option
@_kiosk_option
@_fails_cleanly
def scanners_assign(scanner_id: str, lane: str | None, kiosk: str | None) -> None:
    """Move a scanner to another lane or kiosk: its next scan goes there (no restart)."""
    from edge.scanners import assign

    target = _target(lane, kiosk)
    emit(_on_store(lambda store: assign(store, scanner_id, target)))


@scanners.command("list")
@_fails_cleanly
def scanners_list() -> None:
    """Print the scanners as a JSON array: assignment, last scan, scans with nowhere to go."""
    from edge.scanners import list_scanners

    emit(_on_store(list_scanners))


@scanners.command("remove")
@click.argument("scanner_id", metavar="ID")
@_fails_cleanly
def scanners_remove(scanner_id: str) -> None:
    """Remove a scanner, its assignment and its login."""
    from edge.scanners import remove_scanner

    _remove(remove_scanner, scanner_id)


def _remove(remover: Callable[[Settings, DataDir, Store, str], None], ident: str) -> None:
    """Run a `remove_*` of the core on the store's database; print {"id", "removed"}."""
    settings = load_settings()
    datadir, store = _open(settings)
    try:
        remover(settings, datadir, store, ident)
    finally:
        store.close()
    emit({"id": ident, "removed": True})


@main.group()
def kiosks() -> None:
    """Shopper kiosks: enrolment and pairing each kiosk's browser (docs/kiosk.md)."""


def _cli_actor() -> str:
    """Who pairs from the command line, for the audit trail and the wrong-code count: the
    system account running `edge`, marked as such (it is not a staff account)."""
    import getpass

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name} (edge command)"


@kiosks.command("add")
@click.argument("kiosk_id", metavar="ID")
@click.option("--scanner", default=None, help="An enrolled scanner: its scans go to this kiosk.")
@click.option("--printer", default=None, help="An enrolled printer: this kiosk's coupons print "
              "there.")
@click.option("--lang", "langs", default="", help="Languages offered, first the default, e.g. "
              "de,en (default: the store's locale).")
@_fails_cleanly
def kiosks_add(kiosk_id: str, scanner: str | None, printer: str | None, langs: str) -> None:
    """Enrol a kiosk; prints its settings and its device's broker login
    {"username","password"} (shown once), as `edge devices add` does."""
    from edge.kiosks import add_kiosk

    settings = load_settings()
    datadir, store = _open(settings)
    try:
        kiosk, enrolment = add_kiosk(settings, datadir, store, kiosk_id, scanner=scanner,
                                     printer=printer, langs=langs)
    finally:
        store.close()
    emit({**kiosk.to_dict(), **enrolment.to_dict()})


@kiosks.command("list")
@_fails_cleanly
def kiosks_list() -> None:
    """Print the kiosks as a JSON array: scanner, printer, languages, pairing."""
    from edge.kiosks import list_kiosks

    emit(_on_store(list_kiosks))


@kiosks.command("remove")
@click.argument("kiosk_id", metavar="ID")
@_fails_cleanly
def kiosks_remove(kiosk_id: str) -> None:
    """Remove a kiosk, its broker login and its browser's credential."""
    from edge.kiosks import remove_kiosk

    _remove(remove_kiosk, kiosk_id)


@kiosks.command("pair")
@click.argument("kiosk_id", metavar="ID")
@click.argument("code")
@_fails_cleanly
def kiosks_pair(kiosk_id: str, code: str) -> None:
    """Pair kiosk ID with the browser whose screen shows CODE (e.g. "1234 5678")."""
    from edge.kiosks import pair_kiosk

    kiosk = _on_store(lambda store: pair_kiosk(store, kiosk_id, code, _cli_actor()))
    emit({**kiosk.to_dict(), "paired": "waiting for the kiosk's screen"})


@kiosks.command("unpair")
@click.argument("kiosk_id", metavar="ID")
@_fails_cleanly
def kiosks_unpair(kiosk_id: str) -> None:
    """End kiosk ID's pairing: its browser's credential stops working at once."""
    from edge.kiosks import unpair_kiosk

    kiosk = _on_store(lambda store: unpair_kiosk(store, kiosk_id, _cli_actor()))
    emit({**kiosk.to_dict(), "unpaired": True})


@main.group()
def staff() -> None:
    """Staff accounts for the web pages."""


@staff.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["cashier", "manager"]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--replace", is_flag=True, help="Change an existing account.")
@_fails_cleanly
def staff_add(username: str, role: str, password_stdin: bool, replace: bool) -> None:
    """Create a staff account; asks for the password unless --password-stdin."""
    from edge.accounts import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _on_store(lambda store: add_user(store, username, password, role, replace=replace))
    emit({"username": user.username, "role": user.role})


@staff.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_fails_cleanly
def staff_passwd(username: str, password_stdin: bool) -> None:
    """Set a staff account's password; its open sessions end at once."""
    from edge.accounts import add_user, get_user

    _, store = _open(load_settings())
    try:
        user = get_user(store, username)
        if user is None:
            raise NotFound(f"There is no staff user {username!r}.")
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        add_user(store, username, password, user.role, replace=True)
    finally:
        store.close()
    emit({"username": username, "role": user.role, "sessions_ended": True})


@staff.command("remove")
@click.argument("username")
@_fails_cleanly
def staff_remove(username: str) -> None:
    """Delete a staff account; its open sessions end at once."""
    from edge.accounts import remove_user

    _, store = _open(load_settings())
    try:
        remove_user(store, username)
    finally:
        store.close()
    emit({"username": username, "removed": True})


def _import_file(path: str, run: Callable[[Any, Callable[[int], None]], Any]) -> None:
    """Import a JSON Lines file with a progress bar on stderr; the report on stdout."""
    with open(path, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    with open(path, encoding="utf-8") as f, click.progressbar(
            length=total, label="importing", file=sys.stderr) as bar:
        report = run(f, bar.update)
    for line, reason in report.skipped[:20]:
        click.echo(f"line {line}: skipped: {reason}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"... and {len(report.skipped) - 20} more skipped lines", err=True)
    emit(report.to_dict())
    if report.skipped:
        sys.exit(1)


@main.group()
def customers() -> None:
    """The customer cache (filled by the hub; files for stand-alone stores and tests)."""


@customers.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@_fails_cleanly
def customers_import(path: str) -> None:
    """Load customers from a JSON Lines file; prints {"imported","skipped","problems"}.

    Exit status 1 when lines were skipped (the good lines are still imported).
    """
    from edge.customers import local_bundle, upsert_customers
    from edge.imports import import_jsonl
    from store_contract.customers import Lookup, parse_customer

    with _service_parts() as (settings, datadir, store, book):
        lookup = Lookup(local_bundle(datadir), settings.country)
        _import_file(path, lambda f, progress: import_jsonl(
            store, f, lambda obj: parse_customer(obj, lookup),
            lambda db, batch: upsert_customers(db, batch, book.wallet_entry), progress))


@main.group()
def campaigns() -> None:
    """Campaigns and their short plain codes (SAVE10)."""


@campaigns.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@_fails_cleanly
def campaigns_import(path: str) -> None:
    """Load campaigns from a JSON Lines file; prints {"imported","skipped","problems"}."""
    from edge.coupons import upsert_campaigns
    from edge.imports import import_jsonl
    from store_contract.campaigns import parse_campaign

    with _service_parts() as (settings, _, store, _book):
        _import_file(path, lambda f, progress: import_jsonl(
            store, f, lambda obj: parse_campaign(obj, settings.locale), upsert_campaigns,
            progress))


@main.group()
def products() -> None:
    """The store's product list, for basket lines on the staff checkout page."""


@products.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="The file's format (default: csv for a .csv file, else JSON Lines).")
@_fails_cleanly
def products_import(path: str, fmt: str | None) -> None:
    """Load products from a CSV or JSON Lines file; prints {"imported","skipped","problems"}.

    A product already known (same sku) is replaced. Exit status 1 when lines were skipped
    (the good lines are still imported).
    """
    from edge.imports import import_records
    from edge.products import parse_store_product, upsert_products
    from store_contract.products import file_format, product_rows

    settings = load_settings()
    fmt = file_format(path, fmt)

    def run(f: Any, progress: Callable[[int], None]) -> Any:
        try:
            rows = product_rows(f, fmt)
        except (ValueError, csv.Error) as exc:
            raise BadRequest(f"{path}: {exc}") from None
        return import_records(store, rows,
                              lambda obj: parse_store_product(obj, settings.currency),
                              upsert_products, progress)

    _, store = _open(settings)
    try:
        _import_file(path, run)
    finally:
        store.close()


@main.group()
def coupons() -> None:
    """Coupon administration."""


@coupons.command("revoke")
@click.argument("ident", metavar="ID")
@click.option("--campaign", is_flag=True, help="ID is a campaign: withdraw all its coupons.")
@click.option("--reason", default=None, help="Why (shown in the cashier's refusal detail).")
@_fails_cleanly
def coupons_revoke(ident: str, campaign: bool, reason: str | None) -> None:
    """Withdraw a coupon (by its id, `jti`) or a whole campaign at this store."""
    from edge.coupons import revoke

    scope = "campaign" if campaign else "coupon"
    _on_store(lambda store: store.write(lambda db: revoke(db, scope, ident, reason)))
    emit({"revoked": ident, "scope": scope})


@main.group("keys")
def keys_group() -> None:
    """The key this store signs its receipt coupons with."""


@keys_group.command("rotate")
@_fails_cleanly
def keys_rotate() -> None:
    """Make a new signing key (new kid); restart the edge to use it. The hub is told at the
    next sync; receipt coupons signed with the old key are no longer honoured."""
    from edge.tokens import rotate_signing_key

    settings = load_settings()
    datadir, store = _open(settings)
    key = rotate_signing_key(datadir, settings.store_id)
    store.close()
    emit({"store": settings.store_id, "kid": key.kid, "restart": "store-edge"})


@contextmanager
def _service_parts() -> Iterator[tuple[Settings, DataDir, Store, Any]]:
    """Settings, data dir, store and coupon book, for commands that read tokens."""
    from edge.coupons import CouponBook
    from edge.tokens import TrustedKeys, store_signing_key

    settings = load_settings()
    datadir, store = _open(settings)
    try:
        keys = TrustedKeys(store, settings.trusted_keys,
                           store_signing_key(datadir, settings.store_id))
        yield settings, datadir, store, CouponBook(settings, store, keys)
    finally:
        store.close()


@main.command()
@_fails_cleanly
def broker() -> None:
    """Run the store's Mosquitto in the foreground with the data dir's config."""
    from edge.broker import BrokerProcess
    from edge.devices import sync_broker_files

    settings = load_settings()
    datadir, store = _open(settings)
    if settings.broker_tls_port:
        # Made if missing (a box upgraded without `edge init`), renewed when near its end.
        StoreTLS.of(datadir).ensure(settings.store_id,
                                    parse_names(settings.tls_names, settings.broker_host))
    sync_broker_files(settings, datadir, store)
    store.close()
    proc = BrokerProcess(settings, datadir)
    _stop_on_signals()  # before the start: a stop that comes during it stops Mosquitto too
    try:
        proc.start()
        assert proc.process is not None
        code = proc.process.wait()
    except KeyboardInterrupt:
        proc.stop()
        return
    if code:
        raise StartupError(f"Mosquitto stopped with exit code {code}")


def _stop_on_signals() -> None:
    def _raise(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, _raise)


@main.command()
@_fails_cleanly
def serve() -> None:
    """Run the edge (HTTP, bus, scheduler) until SIGTERM or SIGINT, then stop cleanly."""
    import waitress

    from edge.app import create_app
    from store_contract.web import proxy_options

    settings = load_settings()
    app = create_app(settings)
    service = app.extensions["edge"]
    # Take the HTTP port before joining the bus, so a second edge started by mistake stops
    # here instead of logging in as this store's edge and pushing the running one off.
    try:
        server = waitress.create_server(app, host=settings.http_host, port=settings.http_port,
                                        threads=settings.http_threads, ident="store-edge",
                                        # The app refuses what is over the limit with a JSON
                                        # 413; the server stops reading far past it.
                                        max_request_body_size=2 * settings.http_max_body_bytes,
                                        **proxy_options(settings.http_trusted_proxy))
    except OSError as exc:
        service.stop()
        raise StartupError(f"cannot listen on {settings.http_host}:{settings.http_port} "
                           f"({exc.strerror}); is another edge running? Change EDGE_HTTP_PORT "
                           "otherwise") from None
    service.start()
    # Everything built so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise pause request handling for tens of milliseconds.
    gc.collect()
    gc.freeze()
    # waitress reports the port as getnameinfo gives it: a string.
    port = int(getattr(server, "effective_port", settings.http_port))
    click.echo(f"edge: store {settings.store_id} serving on http://{settings.http_host}:{port}",
               err=True)
    # As `edge-hub serve` does: the port really listened on, for whoever started us with
    # EDGE_HTTP_PORT=0 (the tests: no other process can take a port chosen that way).
    emit({"listening": f"http://{settings.http_host}:{port}", "port": port})
    sys.stdout.flush()
    _stop_on_signals()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        service.stop()
        click.echo("edge: stopped", err=True)


@main.command()
@click.option("--data-dir", default="./demo-data", show_default=True,
              help="Where the demo store keeps its data.")
@click.option("--http-port", default=8080, show_default=True, type=int)
@click.option("--mqtt-port", default=1883, show_default=True, type=int,
              help="Broker port; a free one is chosen when it is taken.")
@click.option("--hub-port", default=8090, show_default=True, type=int,
              help="Port of the demo's CRM hub; a free one is chosen when it is taken.")
@_fails_cleanly
def demo(data_dir: str, http_port: int, mqtt_port: int, hub_port: int) -> None:
    """A whole demo store on this machine: broker, edge, CRM hub and simulated devices."""
    from store_demo.store import run_demo

    run_demo(data_dir, http_port, mqtt_port, hub_port)


if __name__ == "__main__":
    main()
