"""Password policy for people who sign in: store staff at the edge, regional managers at the
hub. One shape, declared separately by each side, so a change to a cashier rule never
changes a manager's login (docs/operations.md, docs/hub.md).

Wrong passwords are counted three ways: per account and client (the address the request
came from), per client over all accounts, and per account from anywhere. A count that
reaches its limit locks that key for `lock_seconds`; a count left alone that long starts
again. `ANY` stands for "every account" or "every client" in those keys: it is neither a
user name nor an address.
"""

from __future__ import annotations

from dataclasses import dataclass

from store_contract.errors import BadRequest

ANY = "*"


@dataclass(frozen=True)
class PasswordPolicy:
    who: str                       # "staff", "manager": how an error names the account
    min_length: int = 10
    max_failures: int = 5           # per account and client
    client_max_failures: int = 20   # per client, any account
    account_max_failures: int = 50  # per account, any client
    lock_seconds: int = 300

    def check_new(self, password: str) -> None:
        """Refuse a new password the policy does not allow (400, read out to the person)."""
        if len(password) < self.min_length:
            raise BadRequest(f"A {self.who} password needs at least {self.min_length} "
                             "characters.")

    def counters(self, username: str, client: str) -> list[tuple[str, str, int]]:
        """The three (account, client, limit) keys one sign-in try counts against."""
        return [(username, client, self.max_failures), (ANY, client, self.client_max_failures),
                (username, ANY, self.account_max_failures)]

    def after_try(self, failures: int | None, updated: float | None, limit: int, now: float
                  ) -> tuple[int, float]:
        """A key's stored (failures, locked_until) after one more failed try against `limit`;
        `failures` and `updated` are None for a key never counted. A count that reaches the
        limit locks the key (and is stored as 0)."""
        fresh = failures is None or updated is None or updated < now - self.lock_seconds
        count = 1 if fresh else (failures or 0) + 1
        locked = now + self.lock_seconds if count >= limit else 0.0
        return (0 if locked else count), locked
