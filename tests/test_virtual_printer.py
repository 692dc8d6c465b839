"""The virtual receipt printer: ESC/POS interpretation, and the printer over real TCP sockets.

Print data is made by python-escpos itself (`Dummy` for bytes, `Network` over TCP), so these
tests pin the virtual printer to what the printer service really sends and reads back.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zxingcpp
from escpos.printer import Dummy, Network
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageOps

from pos_bridge.printing.interpreter import Printout, interpret
from pos_bridge.printing.tokenizer import Tokenizer
from pos_bridge.virtual_printer import VirtualPrinter
from tests.conftest import REPO, wait_until

PROFILES = ["default", "TM-T88V", "TM-T20II"]
SURVEY = "https://survey.example/r?s=store-1&t=t-123"
WORLDLY = "Crème fraîche €1.49 £2.50 Bäckerei ñ"  # 36 columns


def receipt(profile: str = "default", title: str = "Demo Store", qr: str | None = SURVEY) -> bytes:
    """A small receipt as python-escpos writes it."""
    p = Dummy(profile=profile)
    p.hw("INIT")
    p.set(align="center", bold=True, double_height=True, double_width=True)
    p.textln(title)
    p.set(align="left", bold=False, normal_textsize=True)
    p.textln(WORLDLY)
    p.textln("Total".ljust(30) + "€5.07".rjust(10))
    if qr is not None:
        p.qr(qr, native=False, size=4)
    p.cut()
    return p.output


def decoded(image: Image.Image) -> list[str]:
    """QR payloads in `image`, with the quiet zone paper gives it."""
    framed = ImageOps.expand(image.convert("L"), border=16, fill=255)
    return [result.text for result in zxingcpp.read_barcodes(framed)]


def content(printout: Printout) -> list[str]:
    return [line for line in printout.text if line]


@pytest.fixture
def printer(tmp_path: Path) -> Iterator[VirtualPrinter]:
    with VirtualPrinter(profile="TM-T88V", name=f"vp-{tmp_path.name}") as vp:
        yield vp


@contextlib.contextmanager
def client(vp: VirtualPrinter, profile: str = "TM-T88V") -> Iterator[Network]:
    p = Network("127.0.0.1", port=vp.port, timeout=5, profile=profile)
    p.open()
    try:
        yield p
    finally:
        p.close()


def send(vp: VirtualPrinter, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", vp.port), timeout=5) as s:
        s.sendall(data)


def ask(s: socket.socket, query: bytes) -> int:
    s.sendall(query)
    answer = s.recv(16)
    assert len(answer) == 1, answer
    return answer[0]


# ---------------------------------------------------------------- interpreting bytes


@pytest.mark.parametrize("profile", PROFILES)
def test_text_in_every_code_page_comes_back_exactly(profile: str) -> None:
    printouts = interpret(receipt(profile), profile)

    assert len(printouts) == 1
    (printout,) = printouts
    assert printout.complete
    assert content(printout) == ["Demo Store", WORLDLY, "Total" + " " * 30 + "€5.07"]
    assert printout.unknown == []
    assert "CP437" in printout.codepages and len(printout.codepages) > 1
    assert printout.find_text("Bäckerei ñ")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("impl", ["bitImageRaster", "graphics", "bitImageColumn"])
def test_raster_qr_code_decodes_from_the_printed_image(profile: str, impl: str) -> None:
    p = Dummy(profile=profile)
    p.qr(SURVEY, native=False, image_arguments={"impl": impl})
    p.cut()

    (printout,) = interpret(p.output, profile)

    assert printout.unknown == []
    assert len(printout.images) == 1
    assert printout.images[0].mode in ("1", "L")
    assert decoded(printout.images[0]) == [SURVEY]


def test_raster_images_come_back_dot_for_dot() -> None:
    original = Image.new("1", (64, 40), 1)
    ImageDraw.Draw(original).rectangle((5, 7, 30, 20), fill=0)
    ImageDraw.Draw(original).line((0, 39, 63, 0), fill=0)
    p = Dummy(profile="TM-T88V")
    p.image(original)
    p.image(original, impl="graphics")

    (printout,) = interpret(p.output, "TM-T88V")

    assert not printout.complete  # no cut: the tail is still a printout
    assert [image.size for image in printout.images] == [(64, 40), (64, 40)]
    for image in printout.images:
        assert image.convert("1").tobytes() == original.tobytes()


def test_cuts_split_printouts_and_a_tail_without_content_is_dropped() -> None:
    p = Dummy()
    p.textln("first")
    p.cut()
    p.textln("second")
    p.cut(mode="PART")
    p.textln("third")
    p.cut(feed=False)
    p.textln("tail")
    p.print_and_feed(2)
    data = p.output

    printouts = interpret(data)
    assert [content(x) for x in printouts] == [["first"], ["second"], ["third"], ["tail"]]
    assert [x.complete for x in printouts] == [True, True, True, False]
    assert b"".join(x.raw for x in printouts) == data

    assert [x.complete for x in interpret(data + b"\x1b@\x1bd\x03")] == [True, True, True, False]
    assert interpret(b"\x1b@\n\n") == []


def test_styles_feeds_and_events_are_understood() -> None:
    p = Dummy(profile="TM-T20II")
    p.set(align="right", font="b", bold=True, underline=2, invert=True, flip=True,
          custom_size=True, width=3, height=2, smooth=True, density=5)
    p.textln("styled")
    p.set_with_default()
    p.line_spacing(40)
    p.line_spacing(20, divisor=60)
    p.line_spacing(100, divisor=360)
    p.line_spacing()
    p.ln(2)
    p.block_text("a few words wrapped at the printer's own width " * 3)
    p.textln()
    p.control("HT")
    p.text("\tTab")
    p.control("LF")
    p.print_and_feed(0)
    p.cashdraw(2)
    p.cashdraw(5)
    p.buzzer()
    p.panel_buttons(False)
    p.cut()

    (printout,) = interpret(p.output, "TM-T20II")

    assert printout.unknown == []
    assert printout.text[0] == "styled"
    assert printout.text[1:3] == ["", ""]
    assert printout.find_text("\n        Tab\n")
    assert printout.events == ["drawer pin 2", "drawer pin 5", "buzzer"]
    assert all(len(line) <= 48 for line in printout.text)


def test_long_lines_wrap_at_the_paper_width_like_the_printer() -> None:
    p = Dummy(profile="TM-T88V")
    p.textln("x" * 50)
    p.set(double_width=True)
    p.textln("y" * 30)

    (printout,) = interpret(p.output, "TM-T88V")

    assert printout.text == ["x" * 42, "x" * 8, "y" * 21, "y" * 9]


def test_native_qr_prints_as_a_text_line_and_barcodes_are_unknown() -> None:
    p = Dummy(profile="TM-T88V")
    p.qr("hello", native=True)
    p.barcode("4006381333931", "EAN13")
    p.cut()

    (printout,) = interpret(p.output, "TM-T88V")

    assert "[QR:hello]" in printout.text
    assert printout.unknown == ["1d 6b"]
    assert printout.images == []


def test_unknown_commands_are_recorded_and_skipped() -> None:
    data = b"\x1b@before\n\x1b~\x07\x1d(Z\x02\x00ab\x1c(Y\x01\x00zafter\n\x1dV\x00"

    (printout,) = interpret(data)

    assert printout.text == ["before", "after"]
    assert printout.unknown == ["1b 7e", "07", "1d 28 5a", "1c 28 59"]


def test_a_declared_image_bigger_than_any_printer_is_skipped_not_waited_for() -> None:
    (printout,) = interpret(b"\x1dv0\x00\xff\xff\xff\xffstill printed\n")

    assert printout.unknown == ["1d 76 (too long)"]
    assert printout.find_text("still printed")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_interpret_without_crashing(data: bytes) -> None:
    for printout in interpret(data):
        assert isinstance(printout.text, list)
        if sum(image.width * image.height for image in printout.images) < 4_000_000:
            printout.picture()


def test_random_command_soup_interprets_without_crashing() -> None:
    rng = random.Random(1234)
    prefixes = [b"\x1b", b"\x1d", b"\x1c", b"\x10", b"\x1d(", b"\x1d8L", b"\x1dv0", b"\x1b*",
                b"\x1b&", b"\x1bD", b"\x1dk", b"\x1c(", b"\x1cq", b"\x10\x14", b"\x1dV"]
    for _ in range(300):
        data = b"".join(rng.choice(prefixes) + os.urandom(rng.randint(0, 12))
                        for _ in range(rng.randint(1, 40)))
        for printout in interpret(data):
            printout.png()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(receipt())), max_size=30))
def test_commands_split_across_reads_parse_the_same(cuts: list[int]) -> None:
    data = receipt()
    whole = Tokenizer().feed(data)
    tokenizer = Tokenizer()
    pieces = []
    start = 0
    for end in [*sorted(set(cuts)), len(data)]:
        pieces += tokenizer.feed(data[start:end])
        start = end
    assert b"".join(raw for _, raw, _ in pieces) == data
    assert [(kind, raw) for kind, raw, _ in pieces if kind != 0] == \
        [(kind, raw) for kind, raw, _ in whole if kind != 0]


def test_picture_draws_text_and_images_on_paper_of_the_profile_width() -> None:
    (printout,) = interpret(receipt("TM-T20II"), "TM-T20II")

    picture = printout.picture()

    assert picture.width == 576
    assert picture.height > 200
    assert decoded(picture) == [SURVEY]
    title = picture.crop((0, 0, 576, 8 + 48))  # top margin, one double-height line
    left, _, right, _ = ImageOps.invert(title).getbbox() or (0, 0, 0, 0)
    assert 150 < left < 288 < right < 430  # centred, double width
    assert printout.png().startswith(b"\x89PNG")
    (plain,) = interpret(receipt("default"))
    assert plain.picture().width == 512


def test_interpreting_a_receipt_is_fast_and_draws_nothing() -> None:
    p = Dummy(profile="TM-T88V")
    for i in range(60):
        p.textln(f"Item {i:02d} Bio Äpfel 1 kg".ljust(32) + "€3.98".rjust(10))
    p.qr(SURVEY + "&coupon=" + "x" * 60, native=False, size=6)
    p.qr(SURVEY, native=False, size=7)
    p.cut()
    data = p.output

    interpret(data, "TM-T88V")
    started = time.perf_counter()
    (printout,) = interpret(data, "TM-T88V")
    took = time.perf_counter() - started

    assert len(printout.images) == 2 and min(i.width for i in printout.images) > 200
    assert printout._picture is None
    assert took < 0.1, f"interpret took {took * 1000:.1f} ms"


# ---------------------------------------------------------------- the printer on the network


def test_two_receipts_over_tcp_arrive_as_two_printouts(printer: VirtualPrinter) -> None:
    assert printer.address == f"tcp://127.0.0.1:{printer.port}"
    before = time.monotonic()
    with client(printer) as p:
        for title in ("Receipt one", "Receipt two"):
            p.textln(title)
            p.textln(WORLDLY)
            p.qr(SURVEY, native=False)
            p.cut()

    first, second = printer.wait_printouts(2, timeout=5)

    assert content(first) == ["Receipt one", WORLDLY]
    assert content(second) == ["Receipt two", WORLDLY]
    assert decoded(second.images[0]) == [SURVEY]
    assert printer.connections == 1
    assert printer.bytes_received == len(first.raw) + len(second.raw)
    assert before < printer.last_byte_at <= time.monotonic()


def test_commands_split_across_reads_and_jobs_across_connections(
        printer: VirtualPrinter) -> None:
    data = receipt("TM-T88V", title="Slow")
    with socket.create_connection(("127.0.0.1", printer.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data[:-200])
        for i in range(len(data) - 200, len(data)):  # the end of the QR image and the cut
            s.sendall(data[i:i + 1])
        (slow,) = printer.wait_printouts(1, timeout=5)
    with client(printer) as p:
        p._raw(receipt("TM-T88V", title="Fast"))

    _, fast = printer.wait_printouts(2, timeout=5)

    assert content(slow)[0] == "Slow" and content(fast)[0] == "Fast"
    assert decoded(slow.images[0]) == [SURVEY]
    assert slow.unknown == [] and slow.raw == data
    assert printer.connections == 2


@pytest.mark.parametrize(("paper", "expected"), [("ok", 2), ("near_end", 1), ("empty", 0)])
def test_paper_status_answers_python_escpos(printer: VirtualPrinter, paper: str,
                                            expected: int) -> None:
    printer.set_paper(paper)  # type: ignore[arg-type]
    with client(printer) as p:
        assert p.paper_status() == expected
        assert p.is_online() is (paper != "empty")


def test_cover_open_and_offline_read_as_not_online(printer: VirtualPrinter) -> None:
    with client(printer) as p:
        assert p.is_online()
        printer.set_cover("open")
        assert not p.is_online()
        printer.set_cover("closed")
        printer.set_online(False)
        assert not p.is_online()
        printer.set_online(True)
        assert p.is_online()


def test_status_bytes_follow_the_epson_layout(printer: VirtualPrinter) -> None:
    with socket.create_connection(("127.0.0.1", printer.port), timeout=5) as s:
        assert [ask(s, b"\x10\x04" + bytes([n])) for n in (1, 2, 3, 4)] == [0x12] * 4
        assert ask(s, b"\x1dr\x01") == 0x00
        printer.set_paper("near_end")
        assert ask(s, b"\x10\x04\x04") == 0x1E
        assert ask(s, b"\x1dr1") == 0x03
        printer.set_cover("open")
        assert [ask(s, b"\x10\x04" + bytes([n])) for n in (1, 2)] == [0x1A, 0x16]
        printer.set_cover("closed")
        printer.set_paper("empty")
        assert [ask(s, b"\x10\x04" + bytes([n])) for n in (1, 2, 3, 4)] == [0x1A, 0x32, 0x12, 0x72]
        assert ask(s, b"\x1dr\x01") == 0x0C


def test_nothing_prints_while_the_printer_cannot(printer: VirtualPrinter) -> None:
    job = receipt("TM-T88V", qr=None)
    for stop, resume in [(lambda: printer.set_paper("empty"), lambda: printer.set_paper("ok")),
                         (lambda: printer.set_cover("open"), lambda: printer.set_cover("closed")),
                         (lambda: printer.set_online(False), lambda: printer.set_online(True))]:
        stop()
        discarded = printer.discarded_bytes
        with socket.create_connection(("127.0.0.1", printer.port), timeout=5) as s:
            s.sendall(job)
            assert ask(s, b"\x10\x04\x01") & 0x08  # the status query is still answered
        assert printer.discarded_bytes == discarded + len(job)  # answered after the job
        resume()
    assert printer.printouts == []

    send(printer, job)
    (printout,) = printer.wait_printouts(1, timeout=5)
    assert printout.raw == job  # the status queries were not print data


def test_paper_running_out_mid_job_leaves_an_incomplete_printout(printer: VirtualPrinter) -> None:
    job = receipt("TM-T88V", title="Cut short")
    lost = receipt("TM-T88V", title="Lost")
    keep = job.index(b"Cr") + 5  # the paper ends just after "Crème"
    printer.run_out_after(keep)
    with client(printer) as p:
        p._raw(job)
        assert p.paper_status() == 0
        p._raw(lost)
        assert p.is_online() is False  # answered after `lost` went through

    (cut_short,) = printer.printouts
    assert not cut_short.complete
    assert cut_short.text[-2:] == ["Cut short", "Crème"]
    assert cut_short.raw == job[:keep]
    assert printer.discarded_bytes == len(job) - keep + len(lost)

    printer.set_paper("ok")
    send(printer, receipt("TM-T88V", title="After new roll"))
    (after,) = printer.wait_printouts(1, timeout=5)
    assert content(after)[0] == "After new roll"
    assert [x.complete for x in printer.printouts] == [False, True]


def test_a_vanished_printer_refuses_connections_then_returns_on_its_port(
        printer: VirtualPrinter) -> None:
    port = printer.port
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    with held:
        assert wait_until(lambda: printer.connections == 1)
        printer.set_reachable(False)
        assert held.recv(16) == b""  # the open connection was dropped
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass

    printer.set_reachable(True)
    assert printer.port == port
    with client(printer) as p:
        assert p.is_online()
        p.textln("back again")
        p.cut()
    assert content(printer.wait_printouts(1, timeout=5)[0]) == ["back again"]


def test_out_dir_gets_a_png_and_a_txt_per_printout(tmp_path: Path) -> None:
    seen: list[tuple[int, Path | None]] = []
    with VirtualPrinter(profile="TM-T20II", out_dir=tmp_path / "paper",
                        on_printout=lambda n, _, png: seen.append((n, png))) as vp:
        send(vp, receipt("TM-T20II") + receipt("TM-T20II", title="Second"))
        vp.wait_printouts(2, timeout=5)

    paper = tmp_path / "paper"
    assert sorted(f.name for f in paper.iterdir()) == ["0001.png", "0001.txt", "0002.png",
                                                       "0002.txt"]
    assert "Second" in (paper / "0002.txt").read_text(encoding="utf-8")
    assert WORLDLY in (paper / "0001.txt").read_text(encoding="utf-8")
    with Image.open(paper / "0001.png") as png:
        assert png.width == 576
        assert decoded(png) == [SURVEY]
    assert seen == [(1, paper / "0001.png"), (2, paper / "0002.png")]


def test_garbage_does_not_stop_the_next_receipt(printer: VirtualPrinter) -> None:
    rng = random.Random(99)
    for _ in range(5):
        send(printer, bytes(rng.getrandbits(8) for _ in range(4000)))
    # a declared-but-never-sent image swallows what follows on its connection only
    send(printer, b"\x1dv0\x00\x10\x00\x10\x00")
    assert wait_until(lambda: printer.connections == 6 and printer.open_connections == 0)

    send(printer, receipt("TM-T88V", title="Still works"))

    assert wait_until(lambda: any(p.complete and p.find_text("Still works")
                                  for p in printer.printouts), timeout=5)
    last = printer.printouts[-1]  # no cut after the garbage: it shares the paper
    assert content(last)[-3:] == ["Still works", WORLDLY, "Total" + " " * 30 + "€5.07"]
    assert decoded(last.images[-1]) == [SURVEY]


def test_waiting_for_printouts_that_never_come_says_why(printer: VirtualPrinter) -> None:
    printer.set_paper("empty")
    send(printer, receipt("TM-T88V"))
    with pytest.raises(TimeoutError, match=r"0 of 1 complete printouts.*paper empty"):
        printer.wait_printouts(1, timeout=0.3)


def test_stop_closes_connections_and_threads(tmp_path: Path) -> None:
    vp = VirtualPrinter(name="stopper").start()
    held = socket.create_connection(("127.0.0.1", vp.port), timeout=5)
    assert wait_until(lambda: vp.connections == 1)
    started = time.monotonic()
    vp.stop()
    assert time.monotonic() - started < 1
    with held:
        assert held.recv(16) == b""
    assert not [t for t in threading.enumerate() if t.name.startswith("stopper-")]


# ---------------------------------------------------------------- command line


@pytest.mark.process
def test_command_line_prints_a_line_per_printout_and_stops_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pos_bridge.virtual_printer", "--port", str(port),
         "--host", "127.0.0.1", "--profile", "TM-T20II", "--out", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"listening on tcp://127.0.0.1:{port}" in proc.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(receipt("TM-T20II"))
        line = proc.stdout.readline()
        assert line.startswith("printout 1: ")
        assert line.rstrip("\n").endswith(f" lines, 1 images -> {tmp_path / '0001.png'}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()
