"""Declared settings: the machinery the edge's settings (edge/settings.py) and the hub's
(cloud_sync/hub/settings.py) share.

A service declares its settings as the fields of a frozen dataclass, each made with `opt()`
(default, help text, optional check, secret or not) and typed `str`, `int` or `Path`. A
`Registry` reads them off the dataclass and then turns raw values (environment text, TOML
values) into typed, checked ones, stops at an environment variable of its prefix that is
not declared (suggesting the closest declared one), and checks a document against the
declarations both ways. Every error is one line (`SettingsError`, a StartupError).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from store_contract.errors import StartupError

Check = Callable[[Any], None]


class SettingsError(StartupError):
    """A setting is unknown or has a value of the wrong type."""


def opt(default: Any, help: str, check: Check | None = None, secret: bool = False) -> Any:
    """A declared setting: a dataclass field with its default, its help text and a check
    (raises ValueError with the words that finish "NAME=value ...")."""
    return field(default=default, repr=not secret,
                 metadata={"help": help, "check": check, "secret": secret})


def between(low: int, high: int) -> Check:
    """A check: a whole number from `low` to `high`."""

    def check(value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")

    return check


def time_zone(value: str) -> None:
    """A check: an IANA time zone Python's zoneinfo knows (tzdata is a dependency)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not an IANA time zone such as Europe/Berlin") from None


def locale_name(value: str) -> None:
    """A check: a Babel/CLDR locale."""
    from babel import Locale, UnknownLocaleError

    try:
        Locale.parse(value)
    except (UnknownLocaleError, ValueError):
        raise ValueError("is not a locale such as en_IE, en_GB or de_DE") from None


@dataclass(frozen=True)
class Setting:
    """One declared setting, as read off the dataclass fields."""

    name: str
    type: type
    default: Any
    help: str
    check: Check | None
    secret: bool
    prefix: str

    @property
    def env(self) -> str:
        return f"{self.prefix}{self.name.upper()}"


_TYPES: dict[str, type] = {"str": str, "int": int, "Path": Path}


class Registry:
    """The settings declared by `cls` (a dataclass of `opt()` fields), read from
    `prefix`-named environment variables; `documented_in` is named in the errors.

    The wording of errors is the service's own: `message` finishes "where, name, value,
    problem" (`secret_message` the same without the value), `not_int` is the problem of a
    number that is not one. `empty_is_default`: a variable set to "" means the default.
    `also_known` are variables of the prefix that are not settings (EDGE_CONFIG).
    """

    def __init__(self, cls: type, prefix: str, documented_in: str, *,
                 message: str = "config error: {where}: {name}={value!r} {problem}",
                 secret_message: str = "config error: {where}: {name} {problem}",
                 not_int: str = "is not a whole number; set it to e.g. {default}",
                 empty_is_default: bool = False, also_known: Iterable[str] = ()) -> None:
        self.prefix = prefix
        self.documented_in = documented_in
        self.settings: tuple[Setting, ...] = tuple(
            Setting(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"],
                    f.metadata["check"], f.metadata.get("secret", False), prefix)
            for f in fields(cls) if "help" in f.metadata)
        self.by_name: dict[str, Setting] = {s.name: s for s in self.settings}
        self.by_env: dict[str, Setting] = {s.env: s for s in self.settings}
        self.also_known = frozenset(also_known)
        self._message = message
        self._secret_message = secret_message
        self._not_int = not_int
        self._empty_is_default = empty_is_default

    # ------------------------------------------------------------ one value

    def _fail(self, setting: Setting, where: str, value: Any, problem: str) -> SettingsError:
        form = self._secret_message if setting.secret else self._message
        return SettingsError(form.format(where=where, name=setting.name, value=value,
                                         problem=problem))

    def coerce(self, name: str, raw: Any, where: str, *, text_ok: bool = True) -> Any:
        """`raw` as the type of setting `name`, checked; `text_ok`: a number may come as
        text (from the environment), not from a TOML file."""
        setting = self.by_name.get(name)
        if setting is None:
            near = [n for n in self.by_name if n.split("_")[0] == name.split("_")[0]]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise SettingsError(f"config error: {where}: unknown setting '{name}'{hint}; "
                                f"remove it or see {self.documented_in} for the settings "
                                "there are")
        value = raw
        if setting.type is int:
            if isinstance(raw, bool) or not isinstance(raw, (int, str)) or (
                    isinstance(raw, str) and not text_ok):
                raise SettingsError(
                    f"config error: {where}: {name} must be a whole number, not {raw!r}")
            try:
                value = int(raw)
            except ValueError:
                raise self._fail(setting, where, raw,
                                 self._not_int.format(default=setting.default)) from None
        elif setting.type is Path:
            if not isinstance(raw, (str, Path)):
                raise SettingsError(f"config error: {where}: {name} must be a path (text in "
                                    f"quotes), not {raw!r}")
            value = Path(raw).expanduser().resolve()
        elif setting.type is str and not isinstance(raw, str):
            raise SettingsError(
                f"config error: {where}: {name} must be text (in quotes), not {raw!r}")
        if setting.check is not None:
            try:
                setting.check(value)
            except ValueError as exc:
                raise self._fail(setting, where, value, str(exc)) from None
        return value

    # ------------------------------------------------------------ the environment

    def closest(self, var: str) -> str | None:
        """The declared variable `var` was most likely meant to be, if any is close."""
        squashed = var.replace("_", "")
        for known in sorted(self.by_env):
            if known.replace("_", "") == squashed:
                return known
        near = difflib.get_close_matches(var, sorted(self.by_env), n=1, cutoff=0.8)
        return near[0] if near else None

    def refuse_unknown(self, env: Mapping[str, str]) -> None:
        """Stop at the first variable of the prefix that is not declared."""
        known = set(self.by_env) | self.also_known
        for var in sorted(v for v in env if v.startswith(self.prefix) and v not in known):
            near = self.closest(var)
            hint = f"did you mean {near}? " if near else ""
            raise SettingsError(f"config error: unknown environment variable {var}; {hint}"
                                f"unset it or see {self.documented_in} for the settings "
                                "there are")

    def from_env(self, env: Mapping[str, str]) -> dict[str, Any]:
        """The settings the environment sets, typed and checked (by name)."""
        self.refuse_unknown(env)
        values: dict[str, Any] = {}
        for setting in self.settings:
            raw = env.get(setting.env)
            if raw is None or (raw == "" and self._empty_is_default):
                continue
            values[setting.name] = self.coerce(setting.name, raw, setting.env)
        return values

    # ------------------------------------------------------------ the documentation

    def doc_mismatches(self, text: str) -> tuple[list[str], list[str]]:
        """(declared variables the document does not name, variables of the prefix the
        document names that are not declared)."""
        missing = [s.env for s in self.settings if s.env not in text]
        named = set(re.findall(rf"(?<![A-Za-z0-9_]){re.escape(self.prefix)}[A-Z][A-Z0-9_]*",
                               text))
        unknown = sorted(named - set(self.by_env) - self.also_known)
        return missing, unknown
