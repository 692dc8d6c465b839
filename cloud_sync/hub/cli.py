"""The `edge-hub` command (docs/hub.md): run and administer the CRM hub.

Commands that IT automates print one JSON line; errors are one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from cloud_sync.hub.db import HubDB
from cloud_sync.hub.settings import HubSettings, load_hub_settings
from store_contract import logsafe
from store_contract.console import emit, fails_cleanly_as
from store_contract.errors import BadRequest, StartupError

_fails_cleanly = fails_cleanly_as("edge-hub")

@contextmanager
def _database() -> Iterator[tuple[HubSettings, HubDB]]:
    """The settings and an open database, disposed of afterwards."""
    from cloud_sync.hub.context import hub_datadir

    settings = load_hub_settings()
    hub_datadir(settings)
    try:
        db = HubDB(settings.db_url)
    except StartupError:
        raise
    except Exception as exc:  # a driver's own error: say which database, not a traceback
        raise StartupError(f"cannot open the hub database ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); check "
                           "HUB_DATABASE_URL") from None
    try:
        yield settings, db
    finally:
        db.dispose()


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read {path}: {exc}") from None


def _write_qr(path: str, text: str) -> str:
    from cloud_sync.hub.keys import qr_png

    try:
        Path(path).write_bytes(qr_png(text))
    except OSError as exc:
        raise StartupError(f"cannot write {path}: {exc.strerror}") from None
    return str(Path(path).resolve())


@click.group()
def main() -> None:
    """CRM hub: store sync API, change feed, master data and the regional dashboard."""


@main.command()
@_fails_cleanly
def serve() -> None:
    """Run the hub in the foreground until SIGTERM or SIGINT (waitress)."""
    import waitress

    from cloud_sync.hub.app import create_app
    from store_contract.web import proxy_options

    settings = load_hub_settings()
    # Warnings and errors (as before), stamped in HUB_TZ with the offset, no personal data.
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logsafe.install(zone=settings.zone)
    try:
        db = HubDB(settings.db_url)
    except StartupError:
        raise
    except Exception as exc:
        raise StartupError(f"cannot open the hub database ({exc.__class__.__name__}); check "
                           "HUB_DATABASE_URL") from None
    app = create_app(settings, db)
    try:
        server = waitress.create_server(app, host=settings.http_host, port=settings.http_port,
                                        threads=settings.threads, ident="store-edge-hub",
                                        **proxy_options(settings.trusted_proxy))
    except OSError as exc:
        db.dispose()
        raise StartupError(f"cannot listen on {settings.http_host}:{settings.http_port} "
                           f"({exc.strerror}); change HUB_HTTP_PORT") from None
    gc.collect()
    gc.freeze()  # the app lives as long as the process: keep it out of full collections
    # waitress reports the port as getnameinfo gives it: a string.
    port = int(getattr(server, "effective_port", settings.http_port))
    click.echo(f"edge-hub: serving on http://{settings.http_host}:{port}", err=True)
    emit({"listening": f"http://{settings.http_host}:{port}", "port": port})
    sys.stdout.flush()

    def _raise(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, _raise)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        db.dispose()
        click.echo("edge-hub: stopped", err=True)


@main.command()
@_fails_cleanly
def migrate() -> None:
    """Bring the hub database to this version's schema (back it up first); prints
    {"database","from","was","to","applied"}."""
    from cloud_sync.hub.context import hub_datadir
    from cloud_sync.hub.schema_version import upgrade

    settings = load_hub_settings()
    hub_datadir(settings)
    try:
        db = HubDB(settings.db_url, check_schema=False)
    except Exception as exc:
        raise StartupError(f"cannot open the hub database ({exc.__class__.__name__}); check "
                           "HUB_DATABASE_URL") from None
    try:
        done = upgrade(db.engine)
    except SQLAlchemyError as exc:
        raise StartupError(f"the migration failed and was rolled back ({exc.__class__.__name__}"
                           f": {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        db.dispose()
    word = {"empty": "created the tables", "unversioned": "adopted the tables made before "
            "migrations"}.get(done["was"], "applied")
    if done["applied"]:
        click.echo(f"edge-hub: {word}: {' '.join(done['applied'])}; now at {done['to']}",
                   err=True)
    else:
        click.echo(f"edge-hub: the database is already at {done['to']}; nothing to do",
                   err=True)
    emit({"database": db.engine.dialect.name, **done})


@main.group("stores")
def stores_group() -> None:
    """Register stores and give them tokens."""


@stores_group.command("add")
@click.argument("store_id", metavar="STORE")
@click.option("--region", required=True, help="The region whose managers see this store.")
@click.option("--name", default=None, help="A name people recognise (default: the id).")
@click.option("--rotate", is_flag=True, help="Give a registered store a new token.")
@_fails_cleanly
def stores_add(store_id: str, region: str, name: str | None, rotate: bool) -> None:
    """Register a store; prints {"store","region","token"} (the token is shown only here)."""
    from cloud_sync.hub.feed import publish_keys
    from cloud_sync.hub.keys import hub_signing_key
    from cloud_sync.hub.stores import add_store

    with _database() as (settings, db):
        token = add_store(db, store_id, region, name, rotate=rotate)
        if rotate:  # its key left the key set until the store offers it with the new token
            publish_keys(db, hub_signing_key(settings))
    emit({"store": store_id, "region": region, "token": token})


@stores_group.command("retire")
@click.argument("store_id", metavar="STORE")
@click.option("--reason", default="", help="Why (kept with the retirement).")
@_fails_cleanly
def stores_retire(store_id: str, reason: str) -> None:
    """Take a store out of service: its token stops working and its signing key is revoked
    at every store at their next pull; its history stays."""
    from cloud_sync.hub.feed import publish_keys
    from cloud_sync.hub.keys import hub_signing_key
    from cloud_sync.hub.stores import retire_store

    with _database() as (settings, db):
        result = retire_store(db, store_id, reason)
        publish_keys(db, hub_signing_key(settings))
    emit(result)


@stores_group.command("list")
@_fails_cleanly
def stores_list() -> None:
    """Print the stores, their regions and sync state as a JSON array."""
    from cloud_sync.hub.stores import list_stores

    with _database() as (_, db):
        emit(list_stores(db))


@main.group()
def managers() -> None:
    """Regional managers who sign in to the dashboard."""


@managers.command("add")
@click.argument("username", metavar="USER")
@click.option("--region", default=None, help="The region this manager sees.")
@click.option("--all-regions", is_flag=True, help="This manager sees every region.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin (else it is asked for).")
@click.option("--replace", is_flag=True, help="Reset an existing manager's password and region; "
              "their open dashboard sessions end at once.")
@_fails_cleanly
def managers_add(username: str, region: str | None, all_regions: bool,
                 password_stdin: bool, replace: bool) -> None:
    """Add a manager (or set a manager's password and region); prints the manager."""
    from cloud_sync.hub.managers import add_manager

    if bool(region) == all_regions:
        raise StartupError("give exactly one of --region R and --all-regions")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _database() as (_, db):
        add_manager(db, username, password, None if all_regions else region, replace=replace)
    emit({"manager": username, "region": None if all_regions else region})


@managers.command("remove")
@click.argument("username", metavar="USER")
@_fails_cleanly
def managers_remove(username: str) -> None:
    """Delete a manager; their open dashboard sessions end at once."""
    from cloud_sync.hub.managers import remove_manager

    with _database() as (_, db):
        remove_manager(db, username)
    emit({"manager": username, "removed": True})


@main.group()
def customers() -> None:
    """Customer master data, sent hashed to the stores of each customer's regions."""


@customers.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--country", default="DE", show_default=True,
              help="Phone numbers without +country code are read as numbers of this country.")
@_fails_cleanly
def customers_import(file: str, country: str) -> None:
    """Import customers from JSON Lines; prints {"imported","skipped","problems"}."""
    from cloud_sync.hub.feed import import_customers

    lines = _read_lines(file)
    with _database() as (_, db):
        emit(import_customers(db, lines, country=country.upper()))


@customers.command("erase")
@click.argument("customer_id", metavar="ID")
@_fails_cleanly
def customers_erase(customer_id: str) -> None:
    """Erase a customer at the hub and, through the feed, at every store."""
    from cloud_sync.hub.feed import erase_customer

    with _database() as (_, db):
        emit(erase_customer(db, customer_id))


@customers.command("expire-regions")
@click.option("--days", type=int, default=None,
              help="Not seen in a region this many days (default HUB_CUSTOMER_SEEN_DAYS).")
@_fails_cleanly
def customers_expire_regions(days: int | None) -> None:
    """Tell each region's stores to forget customers not seen there lately (run daily)."""
    from cloud_sync.hub.lookups import expire_regions

    with _database() as (settings, db):
        emit(expire_regions(db, settings.customer_seen_days if days is None else days))


@main.group()
def lookups() -> None:
    """Online customer look-ups by stores, and the look-up keys of regions."""


@lookups.command("audit")
@click.option("--store", "store_id", default=None, help="Only this store.")
@click.option("--since-minutes", type=int, default=None, help="Only the last N minutes.")
@_fails_cleanly
def lookups_audit(store_id: str | None, since_minutes: int | None) -> None:
    """Print look-ups per store and outcome (found, not_found, throttled, bad) as JSON."""
    from cloud_sync.hub.lookups import audit_report

    with _database() as (_, db):
        emit(audit_report(db, store_id, since_minutes))


@lookups.command("rotate-key")
@click.argument("region", metavar="REGION")
@_fails_cleanly
def lookups_rotate_key(region: str) -> None:
    """Give a region a new look-up key; its stores re-read the feed (hashed anew)."""
    from cloud_sync.hub.lookups import rotate_region_key

    with _database() as (_, db):
        emit(rotate_region_key(db, region))


@main.group()
def campaigns() -> None:
    """Campaigns sent to every store."""


@campaigns.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--locale", default="en_IE", show_default=True,
              help="Locale the campaign descriptions are checked in.")
@_fails_cleanly
def campaigns_import(file: str, locale: str) -> None:
    """Import campaigns from JSON Lines; prints {"imported","skipped","problems"}."""
    from cloud_sync.hub.feed import import_campaigns

    lines = _read_lines(file)
    with _database() as (_, db):
        emit(import_campaigns(db, lines, locale))


@campaigns.command("revoke")
@click.argument("campaign_id", metavar="ID")
@click.option("--reason", default="", help="Why (shown to staff).")
@_fails_cleanly
def campaigns_revoke(campaign_id: str, reason: str) -> None:
    """Withdraw a campaign at every store."""
    from cloud_sync.hub.feed import revoke

    with _database() as (_, db):
        emit(revoke(db, "campaign", campaign_id, reason))


@main.group()
def products() -> None:
    """The chain's products, sent to every store (each applies its own currency's)."""


@products.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="The file's format (default: csv for a .csv file, else JSON Lines).")
@click.option("--currency", default=None, metavar="CUR",
              help="The currency of rows without a currency column (ISO 4217, e.g. EUR).")
@_fails_cleanly
def products_import(file: str, fmt: str | None, currency: str | None) -> None:
    """Import products from CSV or JSON Lines (the columns of `edge products import`, and
    currency); prints {"imported","unchanged","skipped","problems"}. Exit status 1 when
    lines were skipped (the good lines are still imported)."""
    import csv

    from cloud_sync.hub.products import import_products
    from store_contract.products import file_format, product_rows

    try:
        rows = product_rows(_read_lines(file), file_format(file, fmt))
    except (ValueError, csv.Error) as exc:
        raise BadRequest(f"{file}: {exc}") from None
    with _database() as (_, db):
        report = import_products(db, rows, currency)
    emit(report)
    if report["skipped"]:
        sys.exit(1)


@products.command("remove")
@click.argument("sku", metavar="SKU")
@click.option("--currency", default=None, metavar="CUR",
              help="Only its price in this currency (default: in every currency).")
@_fails_cleanly
def products_remove(sku: str, currency: str | None) -> None:
    """Remove a product at the hub and at every store; prints {"sku","removed"}."""
    from cloud_sync.hub.products import remove_product

    with _database() as (_, db):
        emit(remove_product(db, sku, currency))


@main.group()
def coupons() -> None:
    """Coupons signed by the hub for the shopper app."""


@coupons.command("issue")
@click.option("--campaign", "campaign_id", required=True, help="An imported campaign's id.")
@click.option("--customer", default=None, help="Bind the coupon to this customer.")
@click.option("--max", "max_uses", type=int, default=None, help="Uses allowed (default 1).")
@click.option("--until", "until_text", default=None, metavar="YYYY-MM-DD",
              help="Last day it is valid, in each store's own zone.")
@click.option("--days", type=int, default=None,
              help="Valid until today (in HUB_TZ) + this many days (default 30).")
@click.option("--qr", default=None, type=click.Path(dir_okay=False),
              help="Also write the coupon as a QR code PNG here.")
@_fails_cleanly
def coupons_issue(campaign_id: str, customer: str | None, max_uses: int | None,
                  until_text: str | None, days: int | None, qr: str | None) -> None:
    """Sign a coupon; prints {"coupon","token","qr"?}."""
    from cloud_sync.hub.keys import hub_signing_key, issue_coupon
    from store_contract.campaigns import parse_until

    try:
        until = parse_until(until_text, "--until")
    except ValueError as exc:
        raise BadRequest(f"{exc}.", code="bad_until") from None
    with _database() as (settings, db):
        jti, token = issue_coupon(db, hub_signing_key(settings), campaign_id, customer,
                                  max_uses, days, until=until, zone=settings.zone)
    out: dict[str, Any] = {"coupon": jti, "token": token}
    if qr:
        out["qr"] = _write_qr(qr, token)
    emit(out)


@coupons.command("revoke")
@click.argument("coupon_id", metavar="ID")
@click.option("--reason", default="", help="Why (shown to staff).")
@_fails_cleanly
def coupons_revoke(coupon_id: str, reason: str) -> None:
    """Revoke one coupon at every store."""
    from cloud_sync.hub.feed import revoke

    with _database() as (_, db):
        emit(revoke(db, "coupon", coupon_id, reason))


@main.group()
def members() -> None:
    """Member codes (what the app shows to identify a shopper)."""


@members.command("issue")
@click.argument("customer_id", metavar="CUSTOMER")
@click.option("--qr", default=None, type=click.Path(dir_okay=False),
              help="Also write the code as a QR code PNG here.")
@_fails_cleanly
def members_issue(customer_id: str, qr: str | None) -> None:
    """Sign a member code (valid 5 minutes); prints {"customer","token","expires_at","qr"?}."""
    from cloud_sync.hub.keys import hub_signing_key, issue_member

    settings = load_hub_settings()
    token, expires_at = issue_member(hub_signing_key(settings), customer_id)
    out: dict[str, Any] = {"customer": customer_id, "token": token, "expires_at": expires_at}
    if qr:
        out["qr"] = _write_qr(qr, token)
    emit(out)


@main.group("keys")
def keys_group() -> None:
    """The keys coupons are signed with."""


@keys_group.command("show")
@_fails_cleanly
def keys_show() -> None:
    """Print the JWK Set the hub publishes (its key and the stores' keys)."""
    from cloud_sync.hub.feed import jwk_set
    from cloud_sync.hub.keys import hub_signing_key

    with _database() as (settings, db), db.read() as conn:
        emit(jwk_set(conn, hub_signing_key(settings)))


@keys_group.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@_fails_cleanly
def keys_add(file: str) -> None:
    """Trust the chain's app keys (a public JWK or a JWK Set file): they sign coupons and
    member codes like the hub's key, and every store receives them."""
    import json

    from cloud_sync.hub.keys import add_chain_keys, hub_signing_key

    try:
        doc = json.loads("\n".join(_read_lines(file)))
    except ValueError as exc:
        raise StartupError(f"{file} is not JSON: {exc}") from None
    with _database() as (settings, db):
        emit(add_chain_keys(db, hub_signing_key(settings), doc))


@keys_group.command("revoke")
@click.argument("kid", metavar="KID")
@click.option("--reason", default="", help="Why (kept with the revocation).")
@_fails_cleanly
def keys_revoke(kid: str, reason: str) -> None:
    """Stop trusting a store's signing key (a stolen box) or an app key: out of the JWK Set
    and out of every store at its next pull; a store must make a new key (`edge keys
    rotate`)."""
    from cloud_sync.hub.keys import hub_signing_key, revoke_key

    with _database() as (settings, db):
        emit(revoke_key(db, hub_signing_key(settings), kid, reason))


if __name__ == "__main__":
    main()
