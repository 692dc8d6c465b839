"""`python -m pos_bridge.kiosk run`: the kiosk box's presence agent (docs/kiosk-box.md,
"Presence: the kiosk agent").

Every mistake a person can make starting it (a missing or bad option, no password, a login
the broker refuses) ends it with one line on standard error, `kiosk-agent: ...`, and exit
status 2 (3 for a login the broker refuses, as the other device services), so `journalctl`
shows the reason and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import click

from store_contract.protocol import ID_RE

PASSWORD_VAR = "KIOSK_MQTT_PASSWORD"
EVERY_S = click.FloatRange(min=1, max=300)
USAGE_ERROR = 2
LOGIN_REFUSED = 3  # as the scanner and printer services


class Refused(click.ClickException):
    """A start that cannot work: one line, exit status 2."""

    exit_code = USAGE_ERROR


def _id(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not ID_RE.match(value):
        raise click.BadParameter(f"{value!r} is not an id (1-32 characters of a-z, 0-9 "
                                 "and '-', starting with a letter or digit)")
    return value


def _mqtt(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if urlsplit(value).scheme not in ("mqtt", "mqtts"):
        raise click.BadParameter(f"the store broker must be an mqtt:// or mqtts:// address, "
                                 f"not {value!r}")
    return value


def _page(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from pos_bridge.kiosk.agent import check_page_url

    if value is None:
        return None
    try:
        return check_page_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def cli() -> None:
    """The kiosk box's presence agent: the kiosk on the store bus, with its screen's state."""


@cli.command()
@click.option("--store", required=True, callback=_id, help="The store id.")
@click.option("--kiosk", "kiosk_id", required=True, callback=_id,
              help="The kiosk's id, as enrolled with `edge kiosks add`; its broker login is "
                   "kiosk-ID.")
@click.option("--mqtt", "mqtt_url", required=True, callback=_mqtt,
              help="The store broker, e.g. mqtts://store-box.local:8883?cafile=/etc/store-edge/ca.crt.")
@click.option("--page", envvar="KIOSK_URL", callback=_page,
              help="The kiosk page whose server is checked (default: $KIOSK_URL, as the "
                   "browser's script takes it); without one, `page` is not reported.")
@click.option("--page-ca", type=click.Path(exists=True, dir_okay=False),
              help="The store's CA certificate (PEM) for an https:// page; default: the "
                   "system's CAs.")
@click.option("--browser-profile", type=click.Path(file_okay=False, path_type=Path),
              envvar="KIOSK_PROFILE_DIR",
              help="The browser's profile folder (default: $KIOSK_PROFILE_DIR, else the "
                   "script's ~/.local/state/store-kiosk-browser).")
@click.option("--every", type=EVERY_S, default=15.0, show_default=True,
              help="Seconds between two looks at the browser and the page (1-300).")
@click.option("--log-level", default="INFO", show_default=True)
def run(store: str, kiosk_id: str, mqtt_url: str, page: str | None, page_ca: str | None,
        browser_profile: Path | None, every: float, log_level: str) -> None:
    """Runs the agent: the kiosk's device is online while it runs (offline through its Last
    Will when the box dies), and its status says `browser` running or stopped and `page` ok
    or unreachable. The MQTT password is read from KIOSK_MQTT_PASSWORD. Stops cleanly on
    SIGTERM or SIGINT."""
    from pos_bridge.device import DeviceClient, DeviceError, connect_until
    from pos_bridge.kiosk.agent import KioskAgent, default_profile_dir
    from store_contract import logsafe

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s kiosk-agent %(levelname)s: %(message)s")
    logsafe.stamp()
    password = os.environ.get(PASSWORD_VAR)
    if not password:
        raise Refused(f"{PASSWORD_VAR} is not set")
    if not browser_profile or not browser_profile.is_absolute():
        if browser_profile:
            raise Refused(f"the browser profile must be an absolute path, not "
                          f"'{browser_profile}'")
        browser_profile = default_profile_dir()
    try:
        tls = ssl.create_default_context(cafile=page_ca) if page_ca else None
    except (OSError, ssl.SSLError) as exc:
        raise Refused(f"--page-ca {page_ca}: not a PEM certificate ({exc})") from None
    device = DeviceClient(store, "kiosk", kiosk_id, mqtt_url, f"kiosk-{kiosk_id}", password)
    agent = KioskAgent(device, browser_profile, page, every, tls)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    screen = agent.prime()
    try:
        if connect_until(device, stop):
            logging.getLogger(__name__).info("kiosk %s online: %s", kiosk_id, screen.describe())
            click.echo(json.dumps({"kiosk": kiosk_id, **screen.fields()}))
            sys.stdout.flush()
            agent.run(stop)
    except DeviceError as exc:  # the broker refused the login
        click.echo(f"kiosk-agent: {exc}", err=True)
        sys.exit(LOGIN_REFUSED)
    finally:
        device.close()


def main() -> None:
    """click's usage errors as one line each (its own format takes three)."""
    try:
        cli.main(standalone_mode=False, prog_name="python -m pos_bridge.kiosk")
    except click.ClickException as exc:
        click.echo(f"kiosk-agent: {exc.format_message()}", err=True)
        sys.exit(USAGE_ERROR)
    except click.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
