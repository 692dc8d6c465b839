"""A manager's approval on a cashier's screen, good for one action.

The manager types their user name and password into the page's approval dialog. They are
checked by `accounts.authenticate`, the sign-in's own path: the same counting of wrong
passwords per account and client, the same lock-out, the same one hash. A right password of
a manager gives an approval: a random id bound to the cashier who asked, the action, the lane
and the sale or receipt, for APPROVAL_SECONDS. The action takes it with `consume`, which
deletes it in the same step, so an approval is never used twice.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlite_utils

from edge.accounts import authenticate, get_user
from edge.store import Store
from store_contract.errors import Forbidden

APPROVAL_SECONDS = 120
MAX_ID_CHARS = 64


def refused(message: str, why: str) -> Forbidden:
    return Forbidden(message, detail={"reason": "approval_refused", "why": why})


def manager_required(message: str, **detail: str) -> Forbidden:
    return Forbidden(message, detail={"reason": "manager_required", **detail})


@dataclass(frozen=True)
class Approval:
    id: str
    manager: str
    expires_at: float


def grant(store: Store, username: str, password: str, client: str, *, for_user: str,
          action: str, lane: str, target: str) -> Approval:
    """A manager's approval of `action` on `target` for `for_user`, if `username` and
    `password` are a manager's (checked as a sign-in is); Forbidden `approval_refused`
    otherwise."""
    manager = authenticate(store, username.strip(), password, client)
    if manager is None:
        raise refused("Wrong manager name or password (after 5 wrong tries, this account "
                      "cannot sign in or approve from this device for 5 minutes).",
                      "credentials")
    if manager.role != "manager":
        raise refused(f"{manager.username} is not a manager: only a manager can approve this.",
                      "not_manager")
    now = time.time()
    approval = Approval(secrets.token_urlsafe(24), manager.username, now + APPROVAL_SECONDS)

    def _write(db: sqlite_utils.Database) -> None:
        db.execute("DELETE FROM staff_approvals WHERE expires_at < ?", (now,))
        db.execute("INSERT INTO staff_approvals (id, manager, for_user, action, lane, target, "
                   "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (approval.id, approval.manager, for_user, action, lane, target,
                    approval.expires_at))

    store.write(_write)
    return approval


def consume(store: Store, approval_id: object, *, for_user: str, action: str, lane: str,
            target: str) -> str:
    """Use an approval for this one action; the approving manager's user name.

    The approval is gone afterwards whatever the outcome: one that does not fit this action
    is refused and cannot be tried again either."""
    if not isinstance(approval_id, str) or not 0 < len(approval_id) <= MAX_ID_CHARS:
        raise refused("That is not an approval: ask a manager to approve on this screen.",
                      "malformed")
    row = store.write(lambda db: db.execute(
        "DELETE FROM staff_approvals WHERE id = ? RETURNING manager, for_user, action, lane, "
        "target, expires_at", (approval_id,)).fetchone())
    if row is None:
        raise refused("This approval was already used or is unknown: an approval is good "
                      "for one action. Ask a manager to approve again.", "used")
    manager, user, approved_action, approved_lane, approved_target, expires_at = tuple(row)
    if (user, approved_action, approved_lane, approved_target) != (for_user, action, lane,
                                                                    target):
        raise refused("This approval was given for another action: ask a manager to approve "
                      "this one.", "other_action")
    if expires_at < time.time():
        raise refused(f"This approval has run out ({APPROVAL_SECONDS // 60} minutes): ask a "
                      "manager to approve again.", "expired")
    still = get_user(store, manager)
    if still is None or still.role != "manager":
        raise refused(f"{manager} is no longer a manager here.", "not_manager")
    return str(manager)
