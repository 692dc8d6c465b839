"""Kiosks: enrolment, pairing a kiosk's browser, and the kiosk credential
(docs/kiosk.md, "Enrolment and pairing").

A kiosk is a device of kind `kiosk` (its own broker login, for presence and scans) plus a
row of `kiosks`: the printer its coupons print on and the languages it offers. Its scanner
is whichever scanner the scanners table sends to it (`edge.scanners`), so moving a scanner
moves it off the kiosk too.

The kiosk's browser holds no password anybody typed: it is *paired* once. Its screen shows
a one-time code bound to that browser by a random pairing cookie; a manager enters the code
for the kiosk (staff page or `edge kiosks pair`); the browser's next poll gets the kiosk
credential, a random token of which only the SHA-256 is kept. Neither the code nor the
token is ever stored or logged in clear. The credential opens that kiosk's pages and
nothing else: it is neither a staff login nor a device password, so every check for those
refuses it without knowing it exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from edge import audit
from edge.datadir import DataDir
from edge.devices import Enrolment, check_device, enrol, remove
from edge.scanners import Target, assign
from edge.settings import Settings
from edge.store import Store
from store_contract.errors import BadRequest, Conflict, EdgeError, NotFound
from store_contract.protocol import format_ts, now_rfc3339

log = logging.getLogger(__name__)

# A code is good for this long after it is shown; the browser then has PICKUP_S after a
# manager entered it to fetch its credential (it polls every 2 s).
CODE_VALID_S = 600
PICKUP_S = 120
CODE_DIGITS = 8
# Wrong codes per staff account within the window, after which that account is refused.
MAX_WRONG_CODES = 5
WRONG_CODE_WINDOW_S = 600
# Codes on screens at once: a browser on the LAN asking for codes in a loop pushes out its
# own oldest, it cannot fill the table.
MAX_OPEN_CODES = 50
# Rows of used and expired codes are kept this long, so a late entry hears why it failed.
KEEP_USED_S = 3600
# The first path segments under /kiosk/ that are the pairing pages' own, never a kiosk id.
RESERVED_IDS = ("pair", "static")
_CODE_RE = re.compile(rf"\d{{{CODE_DIGITS}}}")
_TOKEN_MAX = 128


def _clock() -> float:
    """Now, as Unix time (one place for the tests to move the clock)."""
    return time.time()


def _digest(secret: str) -> str:
    """What is stored of a code, a pairing cookie or a credential: its SHA-256. The secrets
    are random (8 digits shown for at most 10 minutes, 32-byte tokens), not chosen by people."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TooManyWrongCodes(EdgeError):
    code = "too_many_tries"
    status = 429


@dataclass(frozen=True)
class Kiosk:
    id: str
    scanner: str | None        # the scanner assigned to it (edge.scanners), if any
    printer: str | None        # the enrolled printer its coupons print on, if any
    langs: tuple[str, ...]     # languages offered, first = default; () = the store's locale
    paired_at: str | None      # RFC 3339 UTC, None until a browser is paired

    def to_dict(self) -> dict[str, Any]:
        """What `edge kiosks` prints of a kiosk."""
        return {"id": self.id, "scanner": self.scanner, "printer": self.printer,
                "langs": list(self.langs), "paired_at": self.paired_at}


@dataclass(frozen=True)
class Pairing:
    """Where a browser's pairing stands: `waiting` (code on screen, not yet entered),
    `paired` (with `credential` the first time it is asked after a manager entered the code,
    the one moment the token exists in clear), `expired` or `unknown` (no such pairing)."""

    state: str
    kiosk: str | None = None
    credential: str | None = None
    expires_at: float | None = None


def format_code(code: str) -> str:
    """A code as the kiosk shows it and staff type it: "1234 5678"."""
    half = CODE_DIGITS // 2
    return f"{code[:half]} {code[half:]}"


def parse_langs(text: str | None) -> tuple[str, ...]:
    """`de,en` as Babel locale names, first the default; "" or None: the store's locale."""
    from babel import Locale, UnknownLocaleError

    if not text:
        return ()
    langs: list[str] = []
    for tag in (t.strip() for t in text.split(",")):
        try:
            name = str(Locale.parse(tag, sep="-" if "-" in tag else "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            raise BadRequest(f"Language {tag!r} is not a language tag Babel knows, such as de, "
                             "en or de-CH; give them as --lang de,en.") from None
        if name in langs:
            raise BadRequest(f"Language {tag!r} is named twice in --lang.")
        langs.append(name)
    return tuple(langs)


# ------------------------------------------------------------------ enrolment


def _check_new_id(store: Store, kiosk_id: str) -> None:
    check_device("kiosk", kiosk_id)
    if kiosk_id in RESERVED_IDS:
        raise BadRequest(f"A kiosk cannot be called {kiosk_id!r}: /kiosk/{kiosk_id} is a page "
                         "of the pairing. Choose another id.")
    if store.query_one("SELECT 1 AS x FROM kiosks WHERE id = ?", (kiosk_id,)) is not None:
        raise Conflict(f"Kiosk {kiosk_id} is already enrolled; `edge kiosks remove {kiosk_id}` "
                       "first to enrol it afresh.")
    if _device_enrolled(store, "kiosk", kiosk_id):
        raise Conflict(f"Kiosk {kiosk_id} is already enrolled as a device; remove it with "
                       f"`edge devices remove kiosk {kiosk_id}` first, then `edge kiosks add`.")


def _device_enrolled(store: Store, kind: str, device_id: str) -> bool:
    return store.query_one("SELECT 1 AS x FROM devices WHERE kind = ? AND id = ?",
                           (kind, device_id)) is not None


def add_kiosk(settings: Settings, datadir: DataDir, store: Store, kiosk_id: str, *,
              scanner: str | None = None, printer: str | None = None,
              langs: tuple[str, ...] | str = ()) -> tuple[Kiosk, Enrolment]:
    """Enrol a kiosk: its `kiosk` device (the MQTT login, returned once), its row, and its
    scanner moved to it. Everything is checked before anything is written, so a refusal
    leaves nothing half-made."""
    _check_new_id(store, kiosk_id)
    langs = parse_langs(langs if isinstance(langs, str) else ",".join(langs))
    if scanner is not None:
        check_device("scanner", scanner)
        if not _device_enrolled(store, "scanner", scanner):
            raise BadRequest(f"There is no enrolled scanner {scanner!r}. Enrol the kiosk "
                             f"without --scanner, then `edge scanners add {scanner} --kiosk "
                             f"{kiosk_id}`.")
    if printer is not None:
        check_device("printer", printer)
        if not _device_enrolled(store, "printer", printer):
            raise BadRequest(f"There is no enrolled printer {printer!r}; set it up first "
                             "with `edge printers add`.")
    enrolment = enrol(settings, datadir, store, "kiosk", kiosk_id)
    try:
        store.write(lambda db: db.execute(
            "INSERT INTO kiosks (id, printer, langs, added_at) VALUES (?, ?, ?, ?)",
            (kiosk_id, printer, json.dumps(list(langs)), now_rfc3339())))
        if scanner is not None:
            assign(store, scanner, Target("kiosk", kiosk_id))
    except Exception:
        remove_kiosk(settings, datadir, store, kiosk_id)
        raise
    kiosk = get_kiosk(store, kiosk_id)
    assert kiosk is not None
    return kiosk, enrolment


_KIOSK_SQL = """
    SELECT k.id, k.langs, k.paired_at, k.added_at,
           CASE WHEN p.id IS NULL THEN NULL ELSE k.printer END AS printer,
           (SELECT s.id FROM scanners s JOIN devices sd ON sd.kind = 'scanner' AND sd.id = s.id
            WHERE s.target_kind = 'kiosk' AND s.target = k.id
            ORDER BY s.assigned_at DESC, s.id LIMIT 1) AS scanner
    FROM kiosks k
    JOIN devices d ON d.kind = 'kiosk' AND d.id = k.id
    LEFT JOIN devices p ON p.kind = 'printer' AND p.id = k.printer
"""


def _kiosk(row: dict[str, Any]) -> Kiosk:
    return Kiosk(row["id"], row["scanner"], row["printer"], tuple(json.loads(row["langs"])),
                 row["paired_at"])


def get_kiosk(store: Store, kiosk_id: str) -> Kiosk | None:
    """The enrolled kiosk (its device and its row), or None. A printer or scanner removed
    since reads as none."""
    row = store.query_one(_KIOSK_SQL + " WHERE k.id = ?", (kiosk_id,))
    return _kiosk(row) if row else None


def list_kiosks(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Every kiosk with its settings and pairing: `paired` (a browser holds its credential)
    and `waiting` (a manager entered a code its browser has not fetched yet)."""
    now = _clock() if now is None else now
    waiting = {r["kiosk"] for r in store.query(
        "SELECT kiosk FROM kiosk_pairings WHERE state = 'claimed' AND claimed_at >= ?",
        (now - PICKUP_S,))}
    out = []
    for row in store.query(_KIOSK_SQL + " ORDER BY k.id"):
        kiosk = _kiosk(row)
        out.append({"id": kiosk.id, "scanner": kiosk.scanner, "printer": kiosk.printer,
                    "langs": list(kiosk.langs), "paired": kiosk.paired_at is not None,
                    "paired_at": kiosk.paired_at, "waiting": kiosk.id in waiting,
                    "added_at": row["added_at"]})
    return out


def remove_kiosk(settings: Settings, datadir: DataDir, store: Store, kiosk_id: str) -> None:
    """Remove a kiosk, its pairings and its broker login: its credential dies with it. Its
    scanner stays enrolled, sending nowhere until assigned again."""
    remove(settings, datadir, store, "kiosk", kiosk_id, noun="kiosk")


def kiosk_for_credential(store: Store, token: str) -> Kiosk | None:
    """The kiosk whose browser holds `token`; None when no enrolled kiosk holds it now
    (forged, replaced by a newer pairing, unpaired, removed)."""
    if not token or len(token) > _TOKEN_MAX:
        return None
    row = store.query_one(_KIOSK_SQL + " WHERE k.credential_hash = ?", (_digest(token),))
    return _kiosk(row) if row else None


# ------------------------------------------------------------------ pairing


def start_pairing(store: Store, replaces: str | None = None,
                  now: float | None = None) -> tuple[str, str]:
    """A new one-time code for a browser asking to be paired: (pairing cookie, code). The
    browser's earlier pairing (`replaces`, its old cookie) ends: only the newest code on a
    screen can be entered."""
    now = _clock() if now is None else now
    browser = secrets.token_urlsafe(32)

    def _write(db: sqlite_utils.Database) -> str:
        conn = db.conn
        conn.execute("DELETE FROM kiosk_pairings WHERE expires_at < ?", (now - KEEP_USED_S,))
        if replaces:
            conn.execute("DELETE FROM kiosk_pairings WHERE browser_hash = ?",
                         (_digest(replaces),))
        conn.execute(
            "DELETE FROM kiosk_pairings WHERE browser_hash IN (SELECT browser_hash FROM "
            "kiosk_pairings WHERE state = 'shown' AND expires_at >= ? ORDER BY created_at DESC "
            "LIMIT -1 OFFSET ?)", (now, MAX_OPEN_CODES - 1))
        while True:
            code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
            try:
                conn.execute("INSERT INTO kiosk_pairings (browser_hash, code_hash, created_at, "
                             "expires_at) VALUES (?, ?, ?, ?)",
                             (_digest(browser), _digest(code), now, now + CODE_VALID_S))
                return code
            except sqlite3.IntegrityError:  # the same code is still on record: draw again
                continue

    return browser, store.write(_write)


def _wrong_code(db: sqlite_utils.Database, by: str, now: float, why: str) -> BadRequest:
    db.conn.execute("INSERT INTO kiosk_pair_failures (by, at) VALUES (?, ?)", (by, now))
    log.warning("kiosk pairing code entered by %s refused: %s", by, why)
    return BadRequest(f"{why} Check the code on the kiosk's screen.", code="wrong_code")


def _check_tries(db: sqlite_utils.Database, by: str, now: float) -> None:
    db.conn.execute("DELETE FROM kiosk_pair_failures WHERE at < ?", (now - WRONG_CODE_WINDOW_S,))
    rows = db.conn.execute("SELECT at FROM kiosk_pair_failures WHERE by = ? ORDER BY at",
                           (by,)).fetchall()
    if len(rows) >= MAX_WRONG_CODES:
        wait = math.ceil(rows[-MAX_WRONG_CODES][0] + WRONG_CODE_WINDOW_S - now)
        minutes = max(1, math.ceil(wait / 60))
        log.warning("kiosk pairing code entered by %s refused: locked after %d wrong codes",
                    by, MAX_WRONG_CODES)
        raise TooManyWrongCodes(
            f"{MAX_WRONG_CODES} wrong pairing codes in {WRONG_CODE_WINDOW_S // 60} minutes: "
            f"{by} cannot pair a kiosk for {minutes} more minute"
            f"{'' if minutes == 1 else 's'}.", detail={"retry_after_s": wait})


def normalise_code(code: str) -> str:
    """The 8 digits of a typed code ("1234 5678", "1234-5678"), or one clear line why not."""
    digits = re.sub(r"[\s-]", "", code or "")
    if not _CODE_RE.fullmatch(digits):
        raise BadRequest(f"A pairing code is {CODE_DIGITS} digits, as the kiosk shows it "
                         "(1234 5678).")
    return digits


def pair_kiosk(store: Store, kiosk_id: str, code: str, by: str,
               now: float | None = None) -> Kiosk:
    """A manager (`by`) enters the code a kiosk's screen shows, for kiosk `kiosk_id`.

    The code is used up; the kiosk's current credential dies at once, and that screen's
    browser gets the new one with its next poll. Wrong codes count against `by`
    (MAX_WRONG_CODES in WRONG_CODE_WINDOW_S); the pairing goes to the audit trail."""
    now = _clock() if now is None else now
    check_device("kiosk", kiosk_id)
    if get_kiosk(store, kiosk_id) is None:
        raise NotFound(f"No kiosk {kiosk_id!r} is enrolled.")
    digits = normalise_code(code)

    def _write(db: sqlite_utils.Database) -> BadRequest | None:
        _check_tries(db, by, now)
        row = db.conn.execute("SELECT browser_hash, state, expires_at FROM kiosk_pairings "
                              "WHERE code_hash = ?", (_digest(digits),)).fetchone()
        if row is None:
            return _wrong_code(db, by, now, "No kiosk shows this pairing code.")
        if row["state"] != "shown":
            return _wrong_code(db, by, now, "This pairing code was already used.")
        if row["expires_at"] < now:
            return _wrong_code(db, by, now, "This pairing code has expired: the kiosk shows "
                                            "a new one.")
        # One browser per kiosk: an earlier code entered for it but not yet fetched is void.
        db.conn.execute("DELETE FROM kiosk_pairings WHERE kiosk = ? AND state = 'claimed'",
                        (kiosk_id,))
        db.conn.execute("UPDATE kiosk_pairings SET state = 'claimed', kiosk = ?, claimed_at = ? "
                        "WHERE browser_hash = ?", (kiosk_id, now, row["browser_hash"]))
        db.conn.execute("UPDATE kiosks SET credential_hash = NULL, paired_at = NULL "
                        "WHERE id = ?", (kiosk_id,))
        audit.record(db.conn, "kiosk.pair", audit.Actor(by, "staff"), lane="",
                     at=format_ts(datetime.fromtimestamp(now, UTC)),
                     detail={"kiosk": kiosk_id}, event=False)
        return None

    # A wrong code is counted even though the caller is refused: written, then raised.
    refusal = store.write(_write)
    if refusal is not None:
        raise refusal
    log.info("kiosk %s paired by %s; waiting for its browser", kiosk_id, by)
    kiosk = get_kiosk(store, kiosk_id)
    assert kiosk is not None
    return kiosk


def pairing_state(store: Store, browser: str | None, now: float | None = None) -> Pairing:
    """Where the pairing of the browser holding pairing cookie `browser` stands; hands out
    the kiosk credential once, on the first ask after a manager entered its code."""
    now = _clock() if now is None else now
    if not browser or len(browser) > _TOKEN_MAX:
        return Pairing("unknown")
    key = _digest(browser)
    sql = ("SELECT state, kiosk, expires_at, claimed_at FROM kiosk_pairings "
           "WHERE browser_hash = ?")

    def _settled(row: Any) -> Pairing | None:
        """The answer without a write, or None: the credential is to be handed out."""
        if row is None:
            return Pairing("unknown")
        if row["state"] == "done":
            return Pairing("paired", row["kiosk"])
        if row["state"] == "shown":
            if row["expires_at"] < now:
                return Pairing("expired")
            return Pairing("waiting", expires_at=row["expires_at"])
        if row["claimed_at"] + PICKUP_S < now:
            return Pairing("expired")
        return None

    # Screens poll every 2 s: a read, and the one write only when there is a credential.
    settled = _settled(store.query_one(sql, (key,)))
    if settled is not None:
        return settled

    def _write(db: sqlite_utils.Database) -> Pairing:
        row = db.conn.execute(sql, (key,)).fetchone()
        answer = _settled(row)  # again, inside the write: two polls at once hand out one
        if answer is not None:
            return answer
        credential = secrets.token_urlsafe(32)
        db.conn.execute("UPDATE kiosks SET credential_hash = ?, paired_at = ? WHERE id = ?",
                        (_digest(credential), format_ts(datetime.fromtimestamp(now, UTC)),
                         row["kiosk"]))
        db.conn.execute("UPDATE kiosk_pairings SET state = 'done' WHERE browser_hash = ?",
                        (key,))
        return Pairing("paired", row["kiosk"], credential)

    return store.write(_write)


def unpair_kiosk(store: Store, kiosk_id: str, by: str, now: float | None = None) -> Kiosk:
    """End the kiosk's pairing: its browser's credential dies at once (the browser goes
    back to the pairing screen), and a code entered but not yet fetched is void."""
    now = _clock() if now is None else now
    check_device("kiosk", kiosk_id)
    if get_kiosk(store, kiosk_id) is None:
        raise NotFound(f"No kiosk {kiosk_id!r} is enrolled.")

    def _write(db: sqlite_utils.Database) -> None:
        db.conn.execute("UPDATE kiosks SET credential_hash = NULL, paired_at = NULL "
                        "WHERE id = ?", (kiosk_id,))
        db.conn.execute("DELETE FROM kiosk_pairings WHERE kiosk = ? AND state = 'claimed'",
                        (kiosk_id,))
        audit.record(db.conn, "kiosk.unpair", audit.Actor(by, "staff"), lane="",
                     at=format_ts(datetime.fromtimestamp(now, UTC)),
                     detail={"kiosk": kiosk_id}, event=False)

    store.write(_write)
    log.info("kiosk %s unpaired by %s", kiosk_id, by)
    kiosk = get_kiosk(store, kiosk_id)
    assert kiosk is not None
    return kiosk
