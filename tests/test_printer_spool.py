"""A `file://` printer writes only inside the printer spool folder: checked when the printer
is configured (`edge printers add`) and again every time the file is opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.app.printers import add_printer
from edge.datadir import DataDir
from edge.settings import Settings
from edge.store import Store
from pos_bridge.printer import PrinterLink
from pos_bridge.printing.transports import PrinterUnreachable
from store_contract.errors import BadRequest
from tests.test_cli import run_edge


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


@pytest.fixture
def spooled(settings: Settings, spool: Path) -> Settings:
    return settings.with_overrides(printer_spool_dir=str(spool))


@pytest.mark.parametrize("where", ["dotdot", "symlink", "absolute", "the_folder"])
def test_a_file_printer_outside_the_spool_folder_is_refused_when_configured(
        spooled: Settings, datadir: DataDir, store: Store, spool: Path, tmp_path: Path,
        where: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep out\n")
    path = {"dotdot": f"{spool}/../secret.txt", "absolute": "/etc/passwd",
            "symlink": f"{spool}/lp0", "the_folder": str(spool)}[where]
    if where == "symlink":
        (spool / "lp0").symlink_to(secret)
    with pytest.raises(BadRequest, match="outside the printer spool folder") as refused:
        add_printer(spooled, datadir, store, "printer-1", lanes=["lane-1"],
                    connection=f"file://{path}", profile="default")
    assert "\n" not in refused.value.message
    assert store.query_one("SELECT 1 AS x FROM printers") is None
    assert secret.read_text() == "keep out\n"


def test_a_file_printer_inside_the_spool_folder_is_accepted_and_prints(
        spooled: Settings, datadir: DataDir, store: Store, spool: Path) -> None:
    printer, _ = add_printer(spooled, datadir, store, "printer-1", lanes=["lane-1"],
                             connection=f"file://{spool}/lp0", profile="default")
    assert printer.connection == f"file://{spool}/lp0"
    link = PrinterLink(printer.connection, spool_dir=spooled.printer_spool_path)
    link.send(b"receipt\n")
    link.close()
    assert (spool / "lp0").read_bytes() == b"receipt\n"


def test_a_symlink_slipped_in_after_configuration_is_refused_when_opened(
        spool: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep out\n")
    link = PrinterLink(f"file://{spool}/lp0", spool_dir=spool)  # fine when configured
    (spool / "lp0").symlink_to(secret)
    with pytest.raises(PrinterUnreachable, match="outside the printer spool folder"):
        link.send(b"overwrite\n")
    assert link.status().printer == "unreachable"
    assert secret.read_text() == "keep out\n"


def test_the_default_spool_folder_is_in_the_data_dir(settings: Settings) -> None:
    assert settings.printer_spool_path == settings.data_path / "printer-spool"
    with pytest.raises(ValueError, match="outside the printer spool folder"):
        PrinterLink("file:///dev/sda", spool_dir=settings.printer_spool_path)


@pytest.mark.process
def test_edge_printers_add_refuses_a_path_outside_in_one_line(settings: Settings) -> None:
    done = run_edge(settings, "printers", "add", "p1", "--lane", "lane-1", "--connect",
                    "file:///etc/passwd")
    assert done.returncode == 1 and done.stdout == ""
    assert "outside the printer spool folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    inside = settings.printer_spool_path / "lp0"
    ok = run_edge(settings, "printers", "add", "p1", "--lane", "lane-1", "--connect",
                  f"file://{inside}")
    assert ok.returncode == 0, ok.stderr
    assert os.path.commonpath([str(settings.data_path), str(inside)]) == str(settings.data_path)
