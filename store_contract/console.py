"""What the `edge` and `edge-hub` commands print: one JSON line for scripts, and known
errors as one line on stderr with a non-zero exit, never a traceback (docs/operations.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

import click

from store_contract.errors import EdgeError, StartupError

F = TypeVar("F", bound=Callable[..., Any])


def fails_cleanly_as(prog: str) -> Callable[[F], F]:
    """A decorator for `prog`'s commands: known errors become one line on stderr starting
    with `prog: ` and a non-zero exit (2: configuration, 1: refused), never a traceback."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except StartupError as exc:
                click.echo(f"{prog}: {exc}", err=True)
                sys.exit(2)
            except EdgeError as exc:
                click.echo(f"{prog}: {exc.message}", err=True)
                sys.exit(1)

        return cast(F, wrapper)

    return decorate


def emit(obj: Any) -> None:
    """One line of JSON on standard output: what scripts read."""
    click.echo(json.dumps(obj, ensure_ascii=False))
