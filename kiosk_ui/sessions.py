"""Shopper sessions on a shared screen, and the phone look-up's lock-out.

A session is the time between a shopper identifying and the screen going back to its
attract page ("Done", or no touch for the idle timeout). It lives here, in the edge's
memory, and the browser holds only its random token in a cookie: ended, it is forgotten,
so an old token (a replayed request, the next shopper's back button) finds nothing. One
kiosk shows one shopper: identifying starts a new session and ends the one before.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    token: str
    kiosk: str
    shopper: str
    method: str  # how they identified: "member", "card", "phone"
    lang: str
    started: float  # clock seconds
    last: float  # the last touch
    masked: str = ""  # how the screen names them: "Anna · ··34"
    done: dict[str, int] = field(default_factory=dict)  # what they did: {"clipped": 1, ...}
    clipped: set[str] = field(default_factory=set)  # offers clipped in this session
    printed: dict[str, str] = field(default_factory=dict)  # campaign -> print job, this session
    # The app's member code they identified with (None for a card or phone number): what
    # lets the hub believe a consent they give here (docs/kiosk.md, "Consent").
    proof: str | None = field(default=None, repr=False)
    # Held while a press on Print is handled: two presses at once print once.
    printing: threading.Lock = field(default_factory=threading.Lock, repr=False,
                                     compare=False)

    def did(self, action: str) -> None:
        """Count one thing the shopper did ("clipped", "printed", "consent", ...)."""
        self.done[action] = self.done.get(action, 0) + 1

    def summary(self, ended: float, how: str) -> dict[str, Any]:
        """What the `kiosk.session` event says: how, how long, what was done; no names."""
        return {"customer_id": self.shopper, "method": self.method, "lang": self.lang,
                "duration_s": round(max(0.0, ended - self.started), 1), "ended": how,
                "actions": dict(self.done)}


class ShopperSessions:
    """The open sessions by token; at most one per kiosk."""

    def __init__(self, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.clock = clock
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, kiosk: str, shopper: str, method: str, lang: str, masked: str = "",
              proof: str | None = None) -> tuple[Session, Session | None]:
        """A new session for `shopper` at `kiosk`, and the one it replaced (or None)."""
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), kiosk, shopper, method, lang, now, now,
                          masked, proof=proof)
        with self._lock:
            old = self._pop_kiosk(kiosk)
            self._by_token[session.token] = session
        return session, old

    def get(self, token: str | None, kiosk: str) -> Session | None:
        """The live session of this token at this kiosk, touched; None when there is none
        (never was, ended, idle too long, or another kiosk's)."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._by_token.get(token)
            if session is None or session.kiosk != kiosk or now - session.last > self.idle_s:
                return None
            session.last = now
            return session

    def end(self, token: str | None) -> Session | None:
        """End a session now; the session, or None if it had ended already."""
        if not token:
            return None
        with self._lock:
            return self._by_token.pop(token, None)

    def expired(self) -> list[Session]:
        """End and return the sessions idle for longer than the timeout."""
        now = self.clock()
        with self._lock:
            gone = [s for s in self._by_token.values() if now - s.last > self.idle_s]
            for session in gone:
                del self._by_token[session.token]
        return gone

    def _pop_kiosk(self, kiosk: str) -> Session | None:
        for token, session in list(self._by_token.items()):
            if session.kiosk == kiosk:
                return self._by_token.pop(token)
        return None


class PhoneLockout:
    """Phone look-ups per kiosk: `free` wrong numbers in a row are allowed; the next wrong
    one locks the kiosk's phone look-up for `first_s` seconds, and each lock after that
    (without a number found in between) lasts twice as long as the one before, up to
    `max_s`. A number found resets it all. Locked, even the right number is refused."""

    def __init__(self, free: int = 5, first_s: float = 60.0, max_s: float = 960.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.first_s, self.max_s, self.clock = free, first_s, max_s, clock
        # kiosk -> [wrong in a row, locks so far, locked until]
        self._state: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked_for(self, kiosk: str) -> float:
        """Seconds the kiosk's phone look-up stays locked (0: not locked)."""
        with self._lock:
            state = self._state.get(kiosk)
            return max(0.0, state[2] - self.clock()) if state else 0.0

    def wrong(self, kiosk: str) -> float:
        """A number not found (or not a number); the lock this starts in seconds, or 0."""
        with self._lock:
            state = self._state.setdefault(kiosk, [0, 0, 0.0])
            state[0] += 1
            if state[0] <= self.free:
                return 0.0
            length = min(self.max_s, self.first_s * 2 ** state[1])
            state[1] += 1
            state[0] = self.free  # after a lock, the next wrong one locks again, longer
            state[2] = self.clock() + length
            return length

    def found(self, kiosk: str) -> None:
        with self._lock:
            self._state.pop(kiosk, None)
