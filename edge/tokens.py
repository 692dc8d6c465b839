"""The keys this store trusts and its own signing key (docs/checkout.md, "Who signs what").

Tokens are verified by store_contract/jws.py. Trusted keys are the JWK Set at
`EDGE_TRUSTED_KEYS`, keys the hub sent (table `trusted_keys`) and this store's own signing
key, which signs the next-visit coupons printed on its receipts. A store key signs only that
store's receipt offers, and the coupon rules take such a coupon's terms from the campaign,
not from its claims: one stolen store box can then mint no identity and no value beyond the
offers the chain already runs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from edge.datadir import DataDir
from edge.store import Store
from store_contract.errors import StartupError
from store_contract.jws import (
    COUPON_TYP,
    SigningKey,
    TokenRejected,
    Verified,
    key_scope,
    public_key_from_jwk,
    store_kid_pattern,
    store_of_kid,
    verify_compact,
)

log = logging.getLogger(__name__)


def load_jwks_file(path: Path) -> dict[str, Ed25519PublicKey]:
    """Keys by kid from a JWK Set file; a bad file stops start-up with one line."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StartupError(f"trusted_keys: cannot read the JWK Set {path}: {exc}") from None
    keys: dict[str, Ed25519PublicKey] = {}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise StartupError(f'trusted_keys: {path} is not a JWK Set ({{"keys": [...]}})')
    for i, jwk in enumerate(doc["keys"]):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(kid, str) or not kid:
            raise StartupError(f"trusted_keys: key {i} in {path} has no kid")
        try:
            keys[kid] = public_key_from_jwk(jwk)
        except ValueError as exc:
            raise StartupError(f"trusted_keys: key {kid!r} in {path}: {exc}") from None
    return keys


def _new_store_jwk(store_id: str, number: int) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate()))
    return {**jwk, "kid": f"store-{store_id}-{number}"}


def _signing_key(jwk: dict[str, Any]) -> SigningKey:
    private = OKPAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(private, Ed25519PrivateKey)
    return SigningKey(str(jwk["kid"]), private)


def store_signing_key(datadir: DataDir, store_id: str) -> SigningKey:
    """This store's signing key, created once in secrets/ (mode 0600) by `edge init`."""
    return _signing_key(datadir.secret_json("signing-key", lambda: _new_store_jwk(store_id, 1)))


def rotate_signing_key(datadir: DataDir, store_id: str) -> SigningKey:
    """Replace this store's signing key with a new one of a new kid (after a theft, or when
    the hub revoked the old one); coupons signed with the old key are no longer honoured."""
    from edge.datadir import write_private

    old = store_signing_key(datadir, store_id)
    match = store_kid_pattern(store_id).match(old.kid)
    number = int(old.kid.rsplit("-", 1)[1]) if match else 0
    # A kid is never used twice: the time keeps it new even if an older file came back.
    jwk = _new_store_jwk(store_id, max(number + 1, int(time.time())))
    write_private(datadir.secrets / "signing-key.json", json.dumps(jwk, indent=2) + "\n",
                  replace=True)
    return _signing_key(jwk)


class TrustedKeys:
    """The keys coupons and member codes may be signed with, by kid, with their scope."""

    def __init__(self, store: Store, path: str, own: SigningKey | None = None,
                 own_store: str | None = None) -> None:
        self.store = store
        self.path = Path(path).expanduser() if path else None
        self.own = own
        self.own_store = own_store if own_store is not None else (
            store_of_kid(own.kid) if own is not None else None)
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._scopes: dict[str, str | None] = {}
        self.generation = 0  # goes up on every reload, so callers can drop what they cached
        self.reload()

    def reload(self) -> None:
        """Re-read the file, the hub's keys and our own key (after sync or a key change)."""
        keys: dict[str, Ed25519PublicKey] = {}
        scopes: dict[str, str | None] = {}
        if self.path is not None:
            # The operator's own file: chain keys (a store kid there is still a store key).
            for kid, key in load_jwks_file(self.path).items():
                keys[kid], scopes[kid] = key, store_of_kid(kid)
        for row in self.store.query("SELECT kid, jwk FROM trusted_keys"):
            try:
                jwk = json.loads(row["jwk"])
                scope = key_scope(row["kid"], jwk)
                keys[row["kid"]] = public_key_from_jwk(jwk)
                scopes[row["kid"]] = scope
            except ValueError as exc:
                log.warning("ignoring trusted key %s from the hub: %s", row["kid"], exc)
        if self.own is not None:
            keys[self.own.kid] = self.own.private.public_key()
            scopes[self.own.kid] = self.own_store
        self._keys, self._scopes = keys, scopes
        self.generation += 1
        log.debug("trusting %d signing keys", len(keys))

    def trust(self, jwks: dict[str, dict[str, Any]]) -> None:
        """Trust these keys at once, before the hub's key set is committed to the table (so
        coupons in the same page of changes can be read); `reload()` settles it after."""
        keys, scopes = dict(self._keys), dict(self._scopes)
        for kid, jwk in jwks.items():
            scopes[kid] = key_scope(kid, jwk)
            keys[kid] = public_key_from_jwk(jwk)
        self._keys, self._scopes = keys, scopes
        self.generation += 1

    def signer(self, token: str, typ: str) -> Verified:
        """A genuine token of this `typ` and the scope of the key that signed it; raises
        TokenRejected otherwise (`key_scope`: a store key signing anything but a coupon).

        Times (`nbf`, `exp`) are not judged here: the coupon and member rules do that in
        the store's time zone.
        """
        claims, kid = verify_compact(token, typ, self._keys.get)
        store = self._scopes.get(kid)
        if store is not None and typ != COUPON_TYP:
            raise TokenRejected("key_scope")
        return Verified(claims, kid, store)

    def verify(self, token: str, typ: str) -> dict[str, Any]:
        """The claims of a genuine token of this `typ` (see `signer`)."""
        return self.signer(token, typ).claims
