"""Settings: one declared registry, read from config/edge.toml, a site file and the environment.

Order (later wins): the registry's defaults (the same values `config/edge.toml` documents),
`config/edge.toml` when the source tree is present, the site file named by `EDGE_CONFIG`,
then `EDGE_<NAME>` environment variables. An unknown key or a wrong type stops start-up
with one line that says what to change.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from store_contract.registry import (
    Registry,
    Setting,
    SettingsError,
    between,
    locale_name,
    opt,
    time_zone,
)

ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")
REPO_DEFAULTS = Path(__file__).resolve().parent.parent / "config" / "edge.toml"


def _check_id(value: str) -> None:
    if not ID_RE.match(value):
        raise ValueError(
            "must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit")


def _check_mqtt_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError("must look like mqtt://user:password@host:1883 (or mqtts:// for TLS)")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    cafile = parse_qs(parts.query).get("cafile")
    if cafile and parts.scheme != "mqtts":
        raise ValueError("has a cafile but is not mqtts://: the CA file is for TLS")
    if cafile and not Path(cafile[-1]).is_file():
        raise ValueError(f"names a cafile that does not exist: {cafile[-1]}")


def _check_http_url(value: str) -> None:
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL, or empty for a stand-alone store")


def _check_port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 1 to 65535 (0 picks a free one)")


def _check_plain_listener(value: str) -> None:
    if value not in ("localhost", "lan"):
        raise ValueError("must be localhost or lan")


def _positive(value: int) -> None:
    if value < 1:
        raise ValueError("must be 1 or more")


def _body_limit(value: int) -> None:
    if value < 65536:
        raise ValueError("must be 65536 or more (an envelope may be 64 KiB)")


def _non_negative(value: int) -> None:
    if value < 0:
        raise ValueError("must be 0 or more")


def _check_country(value: str) -> None:
    import phonenumbers

    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("is not an ISO 3166 country code such as DE, AT, GB or US")


def _check_currency(value: str) -> None:
    from babel.numbers import get_currency_precision, is_currency

    if not is_currency(value) or get_currency_precision(value) > 3:
        raise ValueError("is not an ISO 4217 currency code such as EUR, GBP or USD")




def _outbox_cap(value: int) -> None:
    if value < 1000:
        raise ValueError("must be 1000 or more (a day of a busy store's sales)")


def _percent(value: int) -> None:
    if not 1 <= value <= 99:
        raise ValueError("must be a percentage from 1 to 99")


def _check_level(value: str) -> None:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")


_opt = opt


@dataclass(frozen=True)
class Settings:
    """The edge's settings, typed and validated; the fields are the registry of settings.

    Build with `load_settings()`; `config/edge.toml` documents each field.
    """

    store_id: str = _opt("store-1", "This store's id, as the hub knows it.", _check_id)
    store_name: str = _opt("Demo Store", "The store's name as staff and shoppers read it.")
    tz: str = _opt("Europe/Berlin", "The store's IANA time zone.", time_zone)
    data_dir: str = _opt("./data", "Where the database, secrets, spool and broker files live.")
    mqtt_url: str = _opt("mqtt://127.0.0.1:1883",
                         "The store broker. Without user:password in it the edge uses its own "
                         "credentials from the data dir.", _check_mqtt_url)
    mqtt_keepalive: int = _opt(30, "MQTT keep-alive of the edge's connection, seconds.", _positive)
    http_host: str = _opt("127.0.0.1", "Address the HTTP service listens on.")
    http_port: int = _opt(8080, "Port the HTTP service listens on.", _check_port)
    http_threads: int = _opt(8, "Worker threads of the HTTP server (waitress).", _positive)
    http_max_body_bytes: int = _opt(131072, "Largest request body the HTTP service reads; "
                                    "larger ones are refused (413) before any parsing.",
                                    _body_limit)
    hub_url: str = _opt("", "The CRM hub's base URL; empty = stand-alone store.", _check_http_url)
    hub_token: str = _opt("", "Bearer token of this store at the hub. A secret: put it in the "
                          "environment or the site file, never in the repository.", secret=True)
    monitor_token: str = _opt("", "Bearer token for /metrics and the detailed /healthz from "
                              "other machines; empty: only from the box itself. A secret.",
                              secret=True)
    trusted_keys: str = _opt("", "Path to a JWK Set trusted for coupons and member codes.")
    country: str = _opt("DE", "The store's country (ISO 3166 alpha-2): phone numbers typed "
                        "without +country code are read as numbers of this country.",
                        _check_country)
    currency: str = _opt("EUR", "The store's currency (ISO 4217); baskets must be in it.",
                         _check_currency)
    locale: str = _opt("en_IE", "Language and number format of the sentences cashiers and "
                       "shoppers read (a Babel/CLDR locale such as en_IE, de_DE).", locale_name)
    clock_skew_s: int = _opt(120, "Clock difference allowed between the shopper's phone, the hub "
                             "and this box when judging coupon and member-code times, seconds.",
                             _non_negative)
    reservation_ttl_s: int = _opt(900, "How long a coupon applied to an open basket is held for "
                                  "it before other lanes may use it again, seconds.", _positive)
    reservation_sweep_s: int = _opt(30, "How often lapsed coupon holds are marked expired (a "
                                    "scheduled job), seconds.", _positive)
    hub_offline_after_s: int = _opt(300, "Without an answer from the hub for this long the store "
                                    "counts as offline: coupons marked online-only are refused.",
                                    _positive)
    hub_lookup_timeout_ms: int = _opt(800, "Longest the till waits for the hub to look up a "
                                      "shopper this store does not know (phone, card or member "
                                      "code), milliseconds; then it answers customer_unknown.",
                                      _positive)
    store_address: str = _opt("", "The store's address as printed under its name on receipts "
                              "(separate lines with ' | ').")
    survey_url: str = _opt("https://feedback.example.com/r", "Where the survey QR on receipts "
                           "points; the store and sale are added as ?s=...&t=...; empty = no "
                           "survey QR.", _check_http_url)
    kiosk_idle_s: int = _opt(60, "Seconds without a touch after which a kiosk ends the "
                             "shopper's session and returns to its attract screen (a warning "
                             "with a More time button 20 s before), 30 to 180.",
                             between(30, 180))
    receipt_offer_days: int = _opt(14, "How long the next-visit coupon printed on a receipt is "
                                   "valid, days (never past its campaign's end); 0 = print no "
                                   "offers.", _non_negative)
    print_retries: int = _opt(6, "How often a receipt is sent again to a printer that does not "
                              "answer or cannot be reached (backoff 2, 4, 8... s) before it is "
                              "shown to staff as failed.", _non_negative)
    sync_batch_events: int = _opt(500, "Most events sent to the hub in one request.", _positive)
    sync_batch_bytes: int = _opt(1_000_000, "Most bytes of events sent to the hub in one request "
                                 "(keep it under the hub's HUB_MAX_BATCH_BYTES).", _positive)
    status_event_interval_s: int = _opt(60, "At most one device.status event per device "
                                        "this often, in seconds (a flapping device).",
                                        _positive)
    sync_interval_s: int = _opt(5, "How often the sender looks for events to send when nothing "
                                "new woke it, seconds (new events are sent at once).", _positive)
    sync_backoff_max_s: int = _opt(300, "Longest wait between tries while the hub is down or "
                                   "busy, seconds (the waits double, with jitter, up to this).",
                                   _positive)
    sync_connect_timeout_s: int = _opt(5, "Time allowed to connect to the hub, seconds.",
                                       _positive)
    sync_read_timeout_s: int = _opt(30, "Time allowed for the hub's answer, seconds.", _positive)
    sync_backlog_warn_s: int = _opt(900, "Staff pages warn when the oldest event not yet sent "
                                    "to the hub is older than this, seconds.", _positive)
    sync_pull_interval_s: int = _opt(60, "How often the edge asks the hub for changes "
                                     "(customers, campaigns, revocations, keys, erasures), "
                                     "seconds.", _positive)
    bus_workers: int = _opt(2, "Threads that run bus handlers; messages of one device stay in "
                            "order.", _positive)
    bus_device_backlog: int = _opt(500, "Messages one device may have waiting before more are "
                                   "dropped, so a flooding device cannot starve the others.",
                                   _positive)
    device_event_rate: int = _opt(20, "Events (evt/*) one device may send per second, on "
                                  "average; more are dropped and counted. Requests are never "
                                  "limited.", _positive)
    device_event_burst: int = _opt(100, "Events one device may send at once above its rate "
                                   "before the rate limit drops any.", _positive)
    status_flood_per_s: int = _opt(50, "A device sending more statuses than this in one "
                                   "second is not listened to for status_mute_s, so the "
                                   "lanes' requests never queue behind its flood.", _positive)
    status_mute_s: int = _opt(10, "How long the edge does not listen to a flooding device's "
                              "status, seconds; then it reads the device's latest.", _positive)
    outbox_max_events: int = _opt(500_000, "Most events the outbox holds for the hub; when it "
                                  "is full only device.status and kiosk.session are dropped, "
                                  "never sales, redemptions, shoppers or consent.", _outbox_cap)
    outbox_alarm_pct: int = _opt(80, "/healthz, /metrics and the staff pages raise the alarm "
                                 "when the outbox is this full, percent of outbox_max_events.",
                                 _percent)
    reply_cache_size: int = _opt(20000, "Replies kept so that a repeated request id gets the "
                                 "same reply.", _positive)
    reply_cache_ttl_s: int = _opt(900, "How long a reply is kept for repeats, seconds.", _positive)
    broker_bin: str = _opt("mosquitto", "The Mosquitto executable that `edge broker` runs.")
    broker_host: str = _opt("", "Address the store's Mosquitto listens on (0.0.0.0 for lanes on "
                            "the LAN); empty = the host of mqtt_url. The port is mqtt_url's.")
    broker_tls_port: int = _opt(8883, "Port of the broker's TLS listener (mqtts://) on "
                                "broker_host, with the store's certificate; 0 = none.",
                                _check_port)
    broker_plain_listener: str = _opt("localhost", "Where the broker's plain (mqtt://) "
                                      "listener is reachable: localhost (the edge and hosted "
                                      "printers only; devices on the LAN use TLS) or lan "
                                      "(broker_host).", _check_plain_listener)
    tls_names: str = _opt("", "Host names and addresses in the box's server certificate, "
                          "comma-separated; empty = its host names, loopback and LAN address.")
    http_trusted_proxy: str = _opt("", "Address of the HTTPS proxy in front of the staff pages "
                                   "(e.g. 127.0.0.1): only its X-Forwarded-Proto and "
                                   "X-Forwarded-For are believed. Empty = no proxy.")
    staff_session_hours: int = _opt(12, "A staff sign-in ends this many hours after it was "
                                    "made, however busy.", _positive)
    staff_idle_minutes: int = _opt(60, "A staff sign-in ends after this many minutes without "
                                   "a request.", _positive)
    disk_min_free_mb: int = _opt(500, "/healthz turns unhealthy when the data dir's disk has "
                                 "less free space than this, in MiB (before it is full).",
                                 _positive)
    printer_spool_dir: str = _opt("", "The only folder a file:// printer connection may "
                                  "point into (symlinks and '..' resolved), e.g. /dev/usb for "
                                  "USB line printers; empty = DATA_DIR/printer-spool.")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR.", _check_level)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def printer_spool_path(self) -> Path:
        """Where file:// printers may write: `printer_spool_dir`, else DATA_DIR/printer-spool."""
        if self.printer_spool_dir:
            return Path(self.printer_spool_dir).expanduser().resolve()
        return self.data_path / "printer-spool"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with EDGE_* set to these settings.

        What a child `edge` process needs to run with exactly these settings; EDGE_* variables
        already in `base` are replaced, not merged.
        """
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("EDGE_")}
        env.update({s.env: str(getattr(self, s.name)) for s in SETTINGS})
        env["EDGE_DATA_DIR"] = str(self.data_path)
        return env

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with some values replaced, each checked like any other source."""
        checked = {name: _coerce(name, value, f"override {name}") for name, value in values.items()}
        return replace(self, **checked)


# The registry of settings (store_contract/registry.py, shared with the hub's).
REGISTRY = Registry(Settings, "EDGE_", "config/edge.toml", also_known=("EDGE_CONFIG",))
SETTINGS: tuple[Setting, ...] = REGISTRY.settings
BY_NAME: dict[str, Setting] = REGISTRY.by_name
_coerce = REGISTRY.coerce


def _read_toml(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config error: settings file {path} does not exist; "
                            f"fix EDGE_CONFIG or create the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config error: {path} is not valid TOML: {exc}") from None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the defaults file, the site file, the environment and overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if REPO_DEFAULTS.exists():
        sources.append((str(REPO_DEFAULTS), _read_toml(REPO_DEFAULTS)))
    site = env.get("EDGE_CONFIG")
    if site:
        sources.append((site, _read_toml(Path(site))))
    for where, table in sources:
        for name, raw in table.items():
            values[name] = _coerce(name, raw, where, text_ok=False)
    values.update(REGISTRY.from_env(env))
    for name, raw in overrides.items():
        values[name] = _coerce(name, raw, f"override {name}")
    return Settings(**values)
