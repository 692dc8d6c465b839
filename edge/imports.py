"""Bulk loading of JSON Lines and CSV files (customers, campaigns, products) with a report
of what was skipped.

Each line is validated on its own; a bad line is skipped with its line number and the
reason, never half-written, and never stops the rest. Good lines are written in batches,
one store transaction each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edge.store import Store
from store_contract.products import jsonl_rows

T = TypeVar("T")
BATCH = 2000


@dataclass
class ImportReport:
    imported: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def to_dict(self, show: int = 50) -> dict[str, Any]:
        return {"imported": self.imported, "skipped": len(self.skipped),
                "problems": [{"line": n, "reason": r} for n, r in self.skipped[:show]]}


def import_jsonl(store: Store, lines: Iterable[str], parse: Callable[[Any], T],
                 write: Callable[[Any, list[T]], None],
                 progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    """Parse each line with `parse` (ValueError = skip with reason) and `write` batches."""
    return import_records(store, jsonl_rows(lines), parse, write, progress)


def import_records(store: Store, records: Iterable[tuple[int, Any]], parse: Callable[[Any], T],
                   write: Callable[[Any, list[T]], None],
                   progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    """(line number, record) pairs, each parsed with `parse`; a ValueError in place of a
    record, or raised by `parse`, skips that line with its reason."""
    report = ImportReport()
    batch: list[T] = []

    def flush() -> None:
        if batch:
            store.write(lambda db: write(db, batch))
            report.imported += len(batch)
            progress(len(batch))
            batch.clear()

    for number, obj in records:
        try:
            if isinstance(obj, ValueError):
                raise obj
            batch.append(parse(obj))
        except ValueError as exc:
            report.skipped.append((number, str(exc)))
            progress(1)
            continue
        if len(batch) >= BATCH:
            flush()
    flush()
    return report
