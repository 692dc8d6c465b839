"""The kiosk's parts that need no server: shopper sessions, the phone look-up's lock-out,
and its words in every language it ships (kiosk_ui/sessions.py, kiosk_ui/i18n.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from kiosk_ui.i18n import TRANSLATIONS, available, check_langs, gettext_for, language_name
from kiosk_ui.model import Terms
from kiosk_ui.sessions import PhoneLockout, ShopperSessions
from kiosk_ui.views import REFUSALS, describe_terms

TEMPLATES = Path(__file__).resolve().parent.parent / "kiosk_ui" / "templates" / "kiosk"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- sessions

def test_a_session_lives_while_touched_and_dies_idle_for_good() -> None:
    clock = Clock()
    sessions = ShopperSessions(60, clock)
    session, old = sessions.start("kiosk-1", "c-1", "member", "de", "Anna")
    assert old is None and len(session.token) >= 40
    clock.now += 59
    assert sessions.get(session.token, "kiosk-1") is session  # touched: 60 s more
    clock.now += 59
    assert sessions.get(session.token, "kiosk-1") is session
    clock.now += 60.5
    assert sessions.get(session.token, "kiosk-1") is None
    assert [s.token for s in sessions.expired()] == [session.token]
    clock.now -= 100  # even if the clock could go back, an ended session stays ended
    assert sessions.get(session.token, "kiosk-1") is None


def test_a_token_is_only_good_at_its_own_kiosk_and_until_it_ends() -> None:
    sessions = ShopperSessions(60, Clock())
    session, _ = sessions.start("kiosk-1", "c-1", "card", "en")
    assert sessions.get(session.token, "kiosk-2") is None
    assert sessions.get("", "kiosk-1") is None and sessions.get(None, "kiosk-1") is None
    assert sessions.get(session.token + "x", "kiosk-1") is None
    assert sessions.end(session.token) is session
    assert sessions.end(session.token) is None
    assert sessions.get(session.token, "kiosk-1") is None


def test_one_shopper_per_kiosk_screen() -> None:
    sessions = ShopperSessions(60, Clock())
    first, _ = sessions.start("kiosk-1", "c-1", "member", "en")
    other, _ = sessions.start("kiosk-2", "c-9", "member", "en")
    second, old = sessions.start("kiosk-1", "c-2", "phone", "en")
    assert old is first and sessions.get(first.token, "kiosk-1") is None
    assert sessions.get(second.token, "kiosk-1") is second
    assert sessions.get(other.token, "kiosk-2") is other


def test_the_session_summary_says_how_and_how_long_but_no_name() -> None:
    clock = Clock()
    session, _ = ShopperSessions(60, clock).start("kiosk-1", "c-1", "phone", "de",
                                                  "Anna · ··34")
    session.done["clipped"] = 2
    summary = session.summary(clock.now + 42.04, "timeout")
    assert summary == {"customer_id": "c-1", "method": "phone", "lang": "de",
                       "duration_s": 42.0, "ended": "timeout", "actions": {"clipped": 2}}
    assert "Anna" not in str(summary) and "34" not in str(summary)


# ---------------------------------------------------------------- phone lock-out

def test_six_wrong_numbers_lock_and_each_lock_after_is_longer() -> None:
    clock = Clock()
    lock = PhoneLockout(free=5, first_s=60, max_s=240, clock=clock)
    assert [lock.wrong("kiosk-1") for _ in range(5)] == [0.0] * 5
    assert lock.locked_for("kiosk-1") == 0.0
    assert lock.wrong("kiosk-1") == 60  # the sixth
    assert lock.locked_for("kiosk-1") == 60
    assert lock.locked_for("kiosk-2") == 0.0  # per kiosk
    clock.now += 59.5
    assert 0 < lock.locked_for("kiosk-1") <= 0.5
    clock.now += 1
    assert lock.locked_for("kiosk-1") == 0.0
    assert lock.wrong("kiosk-1") == 120  # one more wrong after a lock: locked again, longer
    clock.now += 121
    assert lock.wrong("kiosk-1") == 240
    clock.now += 241
    assert lock.wrong("kiosk-1") == 240  # up to max_s
    clock.now += 241
    lock.found("kiosk-1")  # a number found: all forgotten
    assert [lock.wrong("kiosk-1") for _ in range(6)] == [0.0] * 5 + [60]


# ---------------------------------------------------------------- words

def _template_messages() -> set[str]:
    found: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        for _line, message, _comments, _context in extract_from_file(
                "jinja2.ext:babel_extract", str(path), keywords={"_": None}):
            found.add(message)
    return found


def _catalogue(lang: str) -> dict[str, str]:
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "kiosk.po").open("rb") as f:
        return {m.id: m.string for m in read_po(f) if m.id and isinstance(m.id, str)}


TERMS = [Terms("10 %"), Terms("5,00 €", "20,00 €"), Terms("10 %", None, True),
         Terms("10 %", "20,00 €", True)]


def test_every_word_of_the_kiosk_is_in_every_catalogue() -> None:
    wanted = _template_messages() | set(REFUSALS.values())
    # The sentences of coupon terms: collected by asking for each form in English.
    said: list[str] = []

    def record(message: str) -> str:
        said.append(message)
        return message

    for terms in TERMS:
        describe_terms(terms, record)
    wanted |= set(said)
    assert len(wanted) > 30
    assert available() == ("en", "de")
    for lang in available()[1:]:
        catalogue = _catalogue(lang)
        missing = sorted(m for m in wanted if not catalogue.get(m))
        assert not missing, f"{lang}: no translation for {missing}"
        for message, translated in catalogue.items():
            # The same placeholders, so a translation can never break the page.
            assert sorted(re.findall(r"%\(\w+\)s", message)) == sorted(
                re.findall(r"%\(\w+\)s", translated)), message


@pytest.mark.parametrize(("lang", "expected"), [
    ("en", ["10 % off your shopping", "5,00 € off a basket of 20,00 € or more",
            "10 % off selected items", "10 % off selected items in a basket of 20,00 € or more"]),
    ("de", ["10 % Rabatt auf Ihren Einkauf", "5,00 € Rabatt auf Ihren Einkauf ab 20,00 €",
            "10 % Rabatt auf ausgewählte Artikel",
            "10 % Rabatt auf ausgewählte Artikel bei einem Einkauf ab 20,00 €"]),
])
def test_coupon_terms_read_as_one_sentence(lang: str, expected: list[str]) -> None:
    assert [describe_terms(t, gettext_for(lang)) for t in TERMS] == expected


def test_languages_the_kiosk_does_not_speak_fall_back() -> None:
    assert check_langs(("de", "xx", "en")) == ("de", "en")
    assert check_langs(("fr",)) == ("en",)
    assert gettext_for("fr")("Welcome!") == "Welcome!"
    assert gettext_for("de")("Welcome!") == "Willkommen!"
    assert language_name("de") == "Deutsch" and language_name("en") == "English"
