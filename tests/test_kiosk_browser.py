"""The kiosk box's browser: scripts/kiosk-browser.sh and its user unit.

`--dry-run` prints the Chromium command, so the safe flags are checked as the script would
pass them; every bad address or setting is refused with one line naming it; and the script
really starts Debian's Chromium (headless here, as an unprivileged user, as on a kiosk box)
on a page served over HTTP, after wiping what the last session left in its profile.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, serve_files
from tests.test_deploy_docs import _unit

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kiosk-browser.sh"
UNIT = ROOT / "config" / "systemd" / "store-kiosk-browser.service"
DEFAULT_URL = "http://STORE-BOX:8080/kiosk/"
# What makes a shared touch screen safe (docs/kiosk-box.md explains each).
SAFE_FLAGS = ["--kiosk", "--no-first-run", "--no-default-browser-check",
              "--noerrdialogs", "--disable-infobars", "--hide-crash-restore-bubble",
              "--disable-features=Translate,TranslateUI", "--password-store=basic",
              "--disable-extensions", "--disable-component-extensions-with-background-pages",
              "--disable-sync", "--disable-background-networking", "--disable-component-update",
              "--touch-events=enabled", "--disable-pinch", "--overscroll-history-navigation=0"]


def run(*args: str, script: Path = SCRIPT, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    return subprocess.run([str(script), *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def dry_run(*args: str, **env: str) -> list[str]:
    done = run("--dry-run", *args, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout  # one line
    return shlex.split(done.stdout)


def test_dry_run_prints_chromium_in_kiosk_mode_with_the_safe_flags(tmp_path: Path) -> None:
    command = dry_run(XDG_STATE_HOME=str(tmp_path))
    assert command[0] == "/usr/bin/chromium"
    assert command[-1] == DEFAULT_URL
    flags = command[1:-1]
    missing = [f for f in SAFE_FLAGS if f not in flags]
    assert missing == [], f"missing: {missing}"
    # Its own profile, in the user's state folder; never the --no-sandbox of the tests, nor
    # --incognito, which would forget the kiosk's pairing at every restart.
    assert f"--user-data-dir={tmp_path}/store-kiosk-browser" in flags
    assert "--no-sandbox" not in flags and "--incognito" not in flags
    assert not (tmp_path / "store-kiosk-browser").exists()  # a dry run changes nothing


def test_the_page_comes_from_the_argument_then_kiosk_url(tmp_path: Path) -> None:
    setting = "https://edge.store-12.example:8443/kiosk/"
    assert dry_run(KIOSK_URL=setting)[-1] == setting
    assert dry_run("http://10.1.2.3:8080/kiosk/", KIOSK_URL=setting)[-1] == \
        "http://10.1.2.3:8080/kiosk/"
    profile = tmp_path / "profile"
    command = dry_run(KIOSK_PROFILE_DIR=str(profile), KIOSK_CHROMIUM="/opt/chromium/chrome",
                      KIOSK_EXTRA_FLAGS="--force-device-scale-factor=1.5  --lang=de")
    assert command[0] == "/opt/chromium/chrome"
    assert f"--user-data-dir={profile}" in command
    assert command[-3:-1] == ["--force-device-scale-factor=1.5", "--lang=de"]


@pytest.mark.parametrize(("args", "env", "message"), [
    (["javascript:alert(1)"], {}, "the kiosk page must be an http:// or https:// address, "
                                  "not 'javascript:alert(1)'"),
    (["file:///etc/passwd"], {}, "the kiosk page must be an http:// or https:// address, "
                                 "not 'file:///etc/passwd'"),
    ([], {"KIOSK_URL": "http://"}, "the kiosk page must be an http:// or https:// address, "
                                   "not 'http://'"),
    (["http://store box/kiosk/"], {}, "the kiosk page must be an http:// or https:// "
                                      "address, not 'http://store box/kiosk/'"),
    (["--fullscreen"], {}, "unknown option --fullscreen (only --dry-run)"),
    (["http://a:8080/kiosk/", "http://b:8080/kiosk/"], {},
     "one kiosk page address only, got a second: http://b:8080/kiosk/"),
    ([], {"KIOSK_PROFILE_DIR": "kiosk-profile"}, "KIOSK_PROFILE_DIR must be an absolute path "
                                                 "of letters, digits and . _ - /, not "
                                                 "'kiosk-profile'"),
    ([], {"KIOSK_PROFILE_DIR": "/"}, "KIOSK_PROFILE_DIR must be an absolute path of letters, "
                                     "digits and . _ - /, not '/'"),
    ([], {"KIOSK_PROFILE_DIR": '/tmp/a"b'}, "KIOSK_PROFILE_DIR must be an absolute path of "
                                            "letters, digits and . _ - /, not '/tmp/a\"b'"),
])
def test_bad_input_is_refused_in_one_line(args: list[str], env: dict[str, str],
                                          message: str) -> None:
    done = run("--dry-run", *args, **env)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"kiosk-browser: {message}\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="shows what happens when root runs it")
def test_root_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    done = run(KIOSK_PROFILE_DIR=str(profile))
    assert (done.returncode, done.stderr) == (
        2, "kiosk-browser: do not run the kiosk browser as root: run it as the kiosk user "
           "(docs/kiosk-box.md)\n")
    assert not profile.exists()


@pytest.fixture
def kiosk_home() -> Iterator[Path]:
    """A folder the unprivileged user `nobody` owns, holding a copy of the script (the
    checkout and pytest's temporary folders may be closed to other users), and a page
    served over HTTP from it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("runs the browser as the unprivileged user nobody (root and setpriv)")
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}")
    home = Path(tempfile.mkdtemp(prefix="kiosk-box-"))
    try:
        home.chmod(0o755)
        shutil.copy2(SCRIPT, home / "kiosk-browser.sh")
        shutil.chown(home, "nobody", "nogroup")
        yield home
    finally:
        shutil.rmtree(home)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "index.html").write_text(
        '<!doctype html><html lang="en"><title>Kiosk</title><link rel="icon" href="data:,">'
        '<h1 id="welcome">Touch the screen to start</h1></html>')
    with serve_files(tmp_path) as base:
        yield base


def as_kiosk_user(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The copied script as `nobody`, headless and printing the loaded page's DOM.
    `--no-sandbox`: Chromium's sandbox needs kernel features a container may lack."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("KIOSK_", "XDG_", "DBUS_"))}
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         str(home / "kiosk-browser.sh"), *args],
        env={**clean, "HOME": str(home), "XDG_STATE_HOME": str(home),
             "KIOSK_EXTRA_FLAGS": "--headless --no-sandbox --disable-gpu --dump-dom", **env},
        capture_output=True, text=True, timeout=120, check=False)


def test_it_starts_chromium_on_the_page_with_a_fresh_profile(kiosk_home: Path,
                                                             site: str) -> None:
    profile = kiosk_home / "store-kiosk-browser"
    first = as_kiosk_user(kiosk_home, site)
    assert first.returncode == 0, first.stderr
    assert '<h1 id="welcome">Touch the screen to start</h1>' in first.stdout
    # Chromium kept the settings that have no flag.
    prefs = json.loads((profile / "Default" / "Preferences").read_text())
    assert prefs["credentials_enable_service"] is False
    assert prefs["profile"]["password_manager_enabled"] is False
    assert prefs["autofill"]["profile_enabled"] is False
    assert prefs["autofill"]["credit_card_enabled"] is False
    assert prefs["translate"]["enabled"] is False
    assert prefs["download"]["prompt_for_download"] is False
    assert prefs["download"]["default_directory"] == str(profile / "Downloads")
    assert oct(profile.stat().st_mode & 0o777) == "0o700"

    # What a session left behind is gone at the next start.
    left = profile / "Default" / "left-by-the-last-shopper"
    left.write_text("cart")
    again = as_kiosk_user(kiosk_home, site)
    assert again.returncode == 0, again.stderr
    assert "Touch the screen to start" in again.stdout
    assert not left.exists()


def test_a_folder_it_did_not_make_is_never_wiped(kiosk_home: Path, site: str) -> None:
    other = kiosk_home / "documents"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    shutil.chown(other, "nobody", "nogroup")
    done = as_kiosk_user(kiosk_home, site, KIOSK_PROFILE_DIR=str(other))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"kiosk-browser: {other} is not empty and was not made by this "
                           "script: not deleting it (set KIOSK_PROFILE_DIR)\n")
    assert (other / "keep.txt").read_text() == "mine"


def test_a_link_or_another_users_folder_is_never_used(kiosk_home: Path, site: str) -> None:
    roots = kiosk_home / "roots"
    roots.mkdir()  # made by root, as another user could lay one in /tmp
    link = kiosk_home / "link"
    link.symlink_to(roots)
    for profile in (roots, link):
        done = as_kiosk_user(kiosk_home, site, KIOSK_PROFILE_DIR=str(profile))
        assert (done.returncode, done.stdout, done.stderr) == (
            2, "", f"kiosk-browser: {profile} is a link or belongs to another user: not "
                   "using it (set KIOSK_PROFILE_DIR)\n")
    assert roots.is_dir() and link.is_symlink()


def test_the_unit_runs_the_script_and_restarts_it_always() -> None:
    unit = _unit(UNIT.read_text())
    script = unit["ExecStart"]
    assert script.startswith("/opt/store-edge/")
    assert ROOT / script.removeprefix("/opt/store-edge/") == SCRIPT
    assert os.access(SCRIPT, os.X_OK)
    assert (unit["Restart"], unit["StartLimitIntervalSec"]) == ("always", "0")
    # A user unit of the kiosk user's graphical session, never root's.
    assert "User" not in unit
    assert unit["WantedBy"] == unit["After"] == unit["PartOf"] == "graphical-session.target"
    assert unit["EnvironmentFile"] == "-/etc/store-edge/kiosk-browser.env"


def test_the_kiosks_pairing_cookie_survives_a_restart_and_nothing_else(
        kiosk_home: Path) -> None:
    """The kiosk credential is a cookie the pairing set for 400 days: a browser restart (a
    crash, a reboot) must not send the kiosk back to its pairing screen. A page that sets a
    lasting cookie and a session cookie, started twice: the second start sends the lasting
    one only."""
    import http.server
    import threading

    seen: list[str] = []

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the library's name
            seen.append(self.headers.get("Cookie", ""))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            if self.path == "/set":
                self.send_header("Set-Cookie", "kiosk=paired; Max-Age=86400; Path=/; HttpOnly")
                self.send_header("Set-Cookie", "kiosk_shopper=anna; Path=/; HttpOnly")
            self.end_headers()
            self.wfile.write(b'<!doctype html><title>k</title><link rel="icon" href="data:,">'
                             b"<h1>ok</h1>")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        first = as_kiosk_user(kiosk_home, f"{base}/set")
        assert first.returncode == 0, first.stderr
        (kiosk_home / "store-kiosk-browser" / "Default" / "left-by-a-shopper").write_text("x")
        again = as_kiosk_user(kiosk_home, f"{base}/again")
        assert again.returncode == 0, again.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert seen[-1] == "kiosk=paired"  # the lasting cookie only; the session's is gone
    assert not (kiosk_home / "store-kiosk-browser" / "Default" / "left-by-a-shopper").exists()
