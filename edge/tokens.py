"""Signed tokens the shopper's app shows as QR: verified offline against trusted keys.

Coupons (`typ` `coupon+jwt`) and member codes (`member+jwt`) are JWS compact tokens signed
with Ed25519 (`alg` `EdDSA`), with a `kid` naming the key (ARCHITECTURE §5). Only that
algorithm and those key ids are accepted: a token that names another algorithm (`none`,
HS256 with the public key as its secret, ...), an unknown key, the wrong `typ`, or whose
bytes were edited is refused before any of its claims is believed.

Trusted keys are the JWK Set at `EDGE_TRUSTED_KEYS`, keys the hub sent (table
`trusted_keys`) and this store's own signing key, which signs the next-visit coupons
printed on its receipts.

Keys differ in what they may sign (docs/checkout.md, "Who signs what"). A chain key (the
hub's, the app's, those in `EDGE_TRUSTED_KEYS`) signs coupons and member codes. A store key
(kid `store-{store}-{n}`, marked with the store it belongs to) signs only that store's
receipt offers: never a member code, and the coupon rules take such a coupon's terms from
the campaign, not from its claims. One stolen store box can then mint no identity and no
value beyond the offers the chain already runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from edge.datadir import DataDir
from edge.store import Store
from store_contract.errors import StartupError

log = logging.getLogger(__name__)
ALGORITHM = "EdDSA"
COUPON_TYP = "coupon+jwt"
MEMBER_TYP = "member+jwt"
MAX_TOKEN_CHARS = 4096


_JWS = jwt.PyJWS()
# \Z, not $: "$" also matches before a trailing newline.
_STORE_KID_RE = re.compile(r"^store-([a-z0-9][a-z0-9-]{0,31})-[0-9]{1,20}\Z")


def store_kid_pattern(store_id: str) -> re.Pattern[str]:
    """The exact kids a store may publish: `store-{store_id}-{digits}`. The digits after the
    last '-' make it unambiguous: store `a` cannot publish a kid of store `a-b`."""
    return re.compile(rf"^store-{re.escape(store_id)}-[0-9]{{1,20}}\Z")


def store_of_kid(kid: str) -> str | None:
    """The store a store-key kid names (None for any other kid)."""
    match = _STORE_KID_RE.match(kid)
    return match.group(1) if match else None


def key_scope(kid: str, jwk: dict[str, Any]) -> str | None:
    """None for a chain key; the store id for a store key. A store key must say its store
    (`"store"` member, as the hub publishes it) and its kid must name that same store;
    ValueError when the two disagree or a store-looking kid claims to be a chain key."""
    claimed = jwk.get("store")
    named = store_of_kid(kid)
    if claimed is None and named is None:
        return None
    if not isinstance(claimed, str) or named != claimed:
        raise ValueError("a store key's kid and its store do not match")
    return claimed


def _peek_header(token: str) -> dict[str, Any]:
    """The unverified JOSE header, only to choose the key; raises TokenRejected."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise TokenRejected("malformed") from None
    if not isinstance(header, dict):
        raise TokenRejected("malformed")
    return header


class TokenRejected(Exception):
    """The token is not genuine; `reason` says which check failed (for logs and details)."""

    def __init__(self, reason: str, typ: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.typ = typ


def looks_like_jws(text: str) -> bool:
    """Compact JWS has dots; short plain codes and card numbers never do."""
    return "." in text


def public_key_from_jwk(jwk: dict[str, Any]) -> Ed25519PublicKey:
    """An Ed25519 public key from an OKP JWK; raises ValueError for anything else."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("only OKP Ed25519 keys are trusted")
    public = {k: jwk[k] for k in ("kty", "crv", "x") if k in jwk}
    try:
        key = OKPAlgorithm.from_jwk(json.dumps(public))
    except (jwt.InvalidKeyError, ValueError, KeyError) as exc:
        raise ValueError(f"not a usable Ed25519 key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


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


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key and its kid (this store's, for coupons it prints)."""

    kid: str
    private: Ed25519PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(claims, self.private, algorithm=ALGORITHM,
                          headers={"typ": typ, "kid": self.kid})


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


@dataclass(frozen=True)
class Verified:
    """A genuine token's claims and who signed it: `store` is None for a chain key."""

    claims: dict[str, Any]
    kid: str
    store: str | None


def verify_compact(token: str, typ: str, key_for: Callable[[str], Ed25519PublicKey | None]
                   ) -> tuple[dict[str, Any], str]:
    """(claims, kid) of a genuine compact JWS of `typ`; `key_for(kid)` gives the public key
    or None. Raises TokenRejected. Times (`nbf`, `exp`) are not judged here."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected("too_long")
    header = _peek_header(token)
    if header.get("alg") != ALGORITHM:
        raise TokenRejected("alg")
    got_typ = header.get("typ")
    if got_typ != typ:
        raise TokenRejected("typ", got_typ if isinstance(got_typ, str) else None)
    kid = header.get("kid")
    key = key_for(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenRejected("unknown_key")
    try:
        # PyJWS parses and checks the whole token again, strictly, and verifies it.
        verified = _JWS.decode_complete(token, key, algorithms=[ALGORITHM])
        claims = json.loads(verified["payload"])
    except jwt.InvalidSignatureError:
        raise TokenRejected("signature") from None
    except (jwt.PyJWTError, ValueError):
        raise TokenRejected("malformed") from None
    if not isinstance(claims, dict) or verified["header"] != header:
        raise TokenRejected("malformed")
    assert isinstance(kid, str)
    return claims, kid


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
