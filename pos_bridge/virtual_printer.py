"""A virtual network receipt printer: ESC/POS over TCP, real-time status, text and PNG out.

    python -m pos_bridge.virtual_printer --port 9100 --profile TM-T20II --out DIR

It behaves like an Epson on port 9100 as far as the store needs one: it accepts print data on
any number of connections, answers the real-time status queries (DLE EOT n, GS r n) the printer
service uses to decide between `printed` and `held`, stops printing when it is out of paper,
its cover is open or it is offline (print data that arrives then is lost, as on a real printer),
and it can vanish from the network and come back on the same port. The demo store prints to it
and the tests talk to it over real sockets, so the printer service is tested against the same
bytes a real printer would get.

This module is the device only: the socket server, the paper roll, the cover, the online
switch and the status answers. What the bytes print is `pos_bridge.printing.interpreter`'s
(the same interpreter the staff preview uses, so paper and screen come from one set of bytes):
what it received is split into `Printout`s at every cut and can be read back as text lines
and raster images (QR codes decode from them) or drawn as a PNG.

On the network: every connection has its own parser, so a command cut off when its connection
drops is discarded instead of swallowing the next job; all connections print onto one paper
(printouts are split by cuts, not connections). Print data that arrives while the printer
cannot print is counted in `discarded_bytes`; status queries are answered regardless:

    DLE EOT 1  0x12, +0x08 offline (set offline, cover open or paper empty)
    DLE EOT 2  0x12, +0x04 cover open, +0x20 stopped by paper end
    DLE EOT 3  0x12 (no errors are simulated)
    DLE EOT 4  0x12, +0x0C near end, +0x60 paper end (0x72: python-escpos' RT_MASK_NOPAPER)
    GS r 1     0x00, 0x03 near end, 0x0C paper end
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal

from pos_bridge.printing.interpreter import Interpreter, Printout, printer_model
from pos_bridge.printing.tokenizer import EOT, REALTIME, REPLY, TEXT, Tokenizer

log = logging.getLogger(__name__)

PaperState = Literal["ok", "near_end", "empty"]
CoverState = Literal["closed", "open"]

RECV_BYTES = 65536
JOIN_TIMEOUT_S = 2.0

# Real-time status bytes (Epson DLE EOT n): bits 1 and 4 are always set.
STATUS_FIXED = 0x12
STATUS_OFFLINE = 0x08  # n=1
STATUS_COVER_OPEN = 0x04  # n=2
STATUS_PAPER_END_STOP = 0x20  # n=2
STATUS_NEAR_END = 0x0C  # n=4, both near-end bits
STATUS_PAPER_END = 0x60  # n=4, both paper-end bits


# ---------------------------------------------------------------- the network printer

PrintoutCallback = Callable[[int, Printout, Path | None], None]


class VirtualPrinter:
    """A receipt printer on a TCP port (like an Epson on 9100), with a paper roll, a cover and
    an online switch the tests can flip.

    Each connection has its own thread and tokenizer (commands may be split across reads);
    all connections print onto one paper, as a real printer would. `on_printout(number,
    printout, png_path)` is called after each finished printout, outside the lock.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, profile: str = "default",
                 out_dir: Path | None = None, name: str = "virtual", *,
                 on_printout: PrintoutCallback | None = None) -> None:
        self.host = host
        self.port = port
        self.profile = profile
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.name = name
        self.on_printout = on_printout
        self._interpreter = Interpreter(printer_model(profile))  # an unknown profile fails here
        self._cond = threading.Condition(threading.RLock())
        self._finished: list[Printout] = []
        self.paper: PaperState = "ok"
        self.cover: CoverState = "closed"
        self.online = True
        self.reachable = True
        self._budget: int | None = None
        self.bytes_received = 0
        self.discarded_bytes = 0
        self.last_byte_at = 0.0
        self.connections = 0
        self._started = False
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}

    # -- lifecycle

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> VirtualPrinter:
        """Listen (unless set unreachable); returns self so `with VirtualPrinter().start()`
        and `vp = VirtualPrinter().start()` both read well."""
        with self._cond:
            if self._started:
                return self
            self._started = True
            if self.reachable:
                self._listen()
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, and wait for their threads."""
        with self._cond:
            self._started = False
        self._unlisten()

    def __enter__(self) -> VirtualPrinter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _listen(self) -> None:
        listener = socket.create_server((self.host, self.port), backlog=16)
        self.port = int(listener.getsockname()[1])
        wake = socket.socketpair()
        self._listener, self._wake = listener, wake
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener, wake[0]),
                                          name=f"{self.name}-accept", daemon=True)
        self._acceptor.start()
        log.info("virtual printer %s listening on %s", self.name, self.address)

    def _unlisten(self) -> None:
        with self._cond:
            listener, wake, acceptor = self._listener, self._wake, self._acceptor
            self._listener = self._wake = self._acceptor = None
        if wake is not None:
            wake[1].send(b"x")
        if acceptor is not None:
            acceptor.join(JOIN_TIMEOUT_S)
        for sock in (listener, *(wake or ())):
            if sock is not None:
                sock.close()
        with self._cond:
            conns = list(self._conns.items())
        for conn, _ in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
        for conn, thread in conns:
            if thread is not threading.current_thread():
                thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                conn.close()

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        return
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(True)
                    with self._cond:
                        self.connections += 1
                        thread = threading.Thread(
                            target=self._serve, args=(conn,), daemon=True,
                            name=f"{self.name}-conn-{self.connections}")
                        self._conns[conn] = thread
                    thread.start()

    def _serve(self, conn: socket.socket) -> None:
        tokenizer = Tokenizer()
        try:
            while True:
                try:
                    data = conn.recv(RECV_BYTES)
                except OSError:
                    break
                if not data:
                    break
                reply = self._receive(data, tokenizer)
                if reply:
                    try:
                        conn.sendall(reply)
                    except OSError:
                        break
        finally:
            with self._cond:
                self._conns.pop(conn, None)
            conn.close()

    # -- printing

    def _receive(self, data: bytes, tokenizer: Tokenizer) -> bytes:
        arrived = time.monotonic()
        finished: list[Printout] = []
        reply = bytearray()
        with self._cond:
            self.bytes_received += len(data)
            self.last_byte_at = arrived
            for kind, raw, label in tokenizer.feed(data):
                if kind == REALTIME:
                    if raw[1] == EOT:
                        reply.append(self._status(raw[2]))
                    self._interpreter.apply(kind, raw, label)
                elif kind == REPLY:
                    answer = self._sensor(raw[2])
                    if answer is not None:
                        reply.append(answer)
                else:
                    finished += self._print(kind, raw, label)
            for printout in finished:
                printout.ended_at = arrived
            numbered = self._publish(finished)
        self._announce(numbered)
        return bytes(reply)

    def _ready(self) -> bool:
        return self.paper != "empty" and self.cover == "closed" and self.online

    def _print(self, kind: int, raw: bytes, label: str) -> list[Printout]:
        if not self._ready():
            self.discarded_bytes += len(raw)
            return []
        done: list[Printout] = []
        if self._budget is not None and len(raw) > self._budget:
            kept = self._budget if kind == TEXT else 0
            if kept:
                self._interpreter.apply(kind, raw[:kept], label)
            self.discarded_bytes += len(raw) - kept
            return self._run_out()
        if self._budget is not None:
            self._budget -= len(raw)
        printout = self._interpreter.apply(kind, raw, label)
        if printout is not None:
            done.append(printout)
        if self._budget == 0:
            done += self._run_out()
        return done

    def _run_out(self) -> list[Printout]:
        self._budget = None
        self.paper = "empty"
        log.info("virtual printer %s: out of paper", self.name)
        return self._stopped()

    def _stopped(self) -> list[Printout]:
        # Printing stopped half way: what is on the paper is a printout of its own.
        printout = self._interpreter.end()
        return [printout] if printout is not None else []

    def _publish(self, printouts: list[Printout]) -> list[tuple[int, Printout, Path | None]]:
        """Record finished printouts (and their files) under the lock, so a waiter that
        wakes up finds the files written."""
        numbered = []
        for printout in printouts:
            self._finished.append(printout)
            number = len(self._finished)
            png_path = None
            if self.out_dir is not None:
                try:
                    self.out_dir.mkdir(parents=True, exist_ok=True)
                    png_path = self.out_dir / f"{number:04d}.png"
                    png_path.write_bytes(printout.png())
                    (self.out_dir / f"{number:04d}.txt").write_text(
                        "".join(line + "\n" for line in printout.text), encoding="utf-8")
                except OSError:
                    log.exception("virtual printer %s: cannot write printout %d", self.name,
                                  number)
            numbered.append((number, printout, png_path))
        if printouts:
            self._cond.notify_all()
        return numbered

    def _announce(self, numbered: list[tuple[int, Printout, Path | None]]) -> None:
        if self.on_printout is None:
            return
        for number, printout, png_path in numbered:
            try:
                self.on_printout(number, printout, png_path)
            except Exception:
                log.exception("virtual printer %s: on_printout failed", self.name)

    # -- status

    def _status(self, n: int) -> int:
        """The DLE EOT n byte, Epson bit layout (what python-escpos' is_online() and
        paper_status() decode)."""
        status = STATUS_FIXED
        if n == 1 and not self._ready():
            status |= STATUS_OFFLINE
        elif n == 2:
            if self.cover == "open":
                status |= STATUS_COVER_OPEN
            if self.paper == "empty":
                status |= STATUS_PAPER_END_STOP
        elif n == 4:
            # Only the end bits when empty: 0x72 is exactly python-escpos' RT_MASK_NOPAPER.
            if self.paper == "empty":
                status |= STATUS_PAPER_END
            elif self.paper == "near_end":
                status |= STATUS_NEAR_END
        return status

    def _sensor(self, n: int) -> int | None:
        """GS r n: 1/49 paper sensors (near end 0x03, end 0x0C), 2/50 drawer, 4/52 ink."""
        if n in (1, 49):
            return {"ok": 0x00, "near_end": 0x03, "empty": 0x0C}[self.paper]
        if n in (2, 50, 4, 52):
            return 0x00
        return None

    # -- switches for tests and the demo

    def _set(self, change: Callable[[], None]) -> None:
        with self._cond:
            was_ready = self._ready()
            change()
            finished = self._stopped() if was_ready and not self._ready() else []
            numbered = self._publish(finished)
        self._announce(numbered)

    def set_paper(self, state: PaperState) -> None:
        """Load paper ("ok"), reach the near-end mark, or run out. Cancels a pending
        `run_out_after`. Running out ends the printout being printed (complete=False)."""
        if state not in ("ok", "near_end", "empty"):
            raise ValueError(f"paper state must be ok, near_end or empty, not {state!r}")

        def change() -> None:
            self.paper = state
            self._budget = None

        self._set(change)

    def set_cover(self, state: CoverState) -> None:
        """Open or close the cover. Opening it ends the printout being printed
        (complete=False); print data sent while it is open is lost."""
        if state not in ("closed", "open"):
            raise ValueError(f"cover state must be closed or open, not {state!r}")

        def change() -> None:
            self.cover = state

        self._set(change)

    def set_online(self, online: bool) -> None:
        """Take the printer offline (as when the feed button is held) or back online. Going
        offline ends the printout being printed (complete=False); data sent meanwhile is lost."""

        def change() -> None:
            self.online = online

        self._set(change)

    def run_out_after(self, nbytes: int) -> None:
        """Let the paper run out after `nbytes` more bytes of print data (real-time status
        queries do not count): the printout ends there incomplete, paper becomes "empty" and
        later print data is discarded until `set_paper("ok")`."""
        with self._cond:
            self._budget = max(0, nbytes)
            finished = self._run_out() if self._budget == 0 and self._ready() else []
            numbered = self._publish(finished)
        self._announce(numbered)

    def set_reachable(self, reachable: bool) -> None:
        """False: the printer vanished (cable pulled): stop listening and drop every
        connection, so connects are refused. True: listen again on the same port."""
        with self._cond:
            changed = reachable != self.reachable
            self.reachable = reachable
            started = self._started
        if not (changed and started):
            return
        if reachable:
            with self._cond:
                self._listen()
        else:
            self._unlisten()

    # -- reading back

    @property
    def open_connections(self) -> int:
        """Connections open right now (the printer service should not keep one idle)."""
        with self._cond:
            return len(self._conns)

    @property
    def printouts(self) -> list[Printout]:
        """Every printout so far in order, the one being printed last (complete=False)."""
        with self._cond:
            printouts = list(self._finished)
            current = self._interpreter.snapshot()
        return printouts + ([current] if current is not None else [])

    def wait_printouts(self, n: int, timeout: float = 10.0) -> list[Printout]:
        """Wait until at least `n` complete (cut) printouts exist; returns all complete ones."""
        def complete() -> list[Printout]:
            return [p for p in self._finished if p.complete]

        with self._cond:
            if self._cond.wait_for(lambda: len(complete()) >= n, timeout):
                return complete()
            raise TimeoutError(
                f"virtual printer {self.name} at {self.address}: {len(complete())} of {n} "
                f"complete printouts after {timeout:g} s ({len(self._finished)} finished in "
                f"all, {self.bytes_received} bytes received, {self.discarded_bytes} discarded, "
                f"{self.connections} connections; paper {self.paper}, cover {self.cover}, "
                f"{'online' if self.online else 'offline'})")


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Run a virtual printer until SIGTERM/SIGINT, one line per printout on stdout."""
    parser = argparse.ArgumentParser(prog="python -m pos_bridge.virtual_printer",
                                     description="A virtual ESC/POS network receipt printer.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9100, help="TCP port (0: any free port)")
    parser.add_argument("--profile", default="default", help="python-escpos printer profile")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for NNNN.png and NNNN.txt of every printout")
    parser.add_argument("--name", default="virtual", help="printer name for the log")
    args = parser.parse_args(argv)
    try:
        printer_model(args.profile)
    except KeyError:
        parser.error(f"unknown printer profile {args.profile!r}")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_printout(number: int, printout: Printout, png_path: Path | None) -> None:
        line = (f"printout {number}: {len(printout.text)} lines, {len(printout.images)} images"
                + (f" -> {png_path}" if png_path else "")
                + ("" if printout.complete else " (incomplete)"))
        print(line, flush=True)

    printer = VirtualPrinter(args.host, args.port, args.profile, args.out, args.name,
                             on_printout=on_printout)
    with printer:
        print(f"virtual printer {args.name} listening on {printer.address} "
              f"(profile {args.profile})", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
