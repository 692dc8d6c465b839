"""The kiosk's words in the shopper's language.

English is written in the templates and code (`_("...")`); every other language is a
gettext catalogue in `translations/<lang>/LC_MESSAGES/kiosk.po`, read with Babel when the
kiosk starts (no compile step, no `.mo` files to forget). A message a catalogue lacks is
shown in English, never as an empty string. Dates and numbers are Babel's for the language.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Callable
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

TRANSLATIONS = Path(__file__).parent / "translations"
DOMAIN = "kiosk"

Gettext = Callable[[str], str]


def available() -> tuple[str, ...]:
    """The languages the kiosk speaks: English and every catalogue shipped."""
    shipped = sorted(p.parent.parent.name for p in TRANSLATIONS.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return ("en", *shipped)


@cache
def _catalogue(lang: str) -> gettext.NullTranslations:
    path = TRANSLATIONS / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == "en" or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def gettext_for(lang: str) -> Gettext:
    """`_` for `lang` (English for a language without a catalogue)."""
    return _catalogue(lang).gettext


def language_name(lang: str) -> str:
    """A language's name in that language ("Deutsch", "English"), for the switch."""
    try:
        name = Locale.parse(lang).get_display_name(lang)
        return name.capitalize() if name else lang
    except (UnknownLocaleError, ValueError):
        return lang


def check_langs(langs: tuple[str, ...]) -> tuple[str, ...]:
    """The languages of `langs` the kiosk speaks, in order (an unknown one is dropped)."""
    known = set(available())
    return tuple(lang for lang in langs if lang in known) or ("en",)
