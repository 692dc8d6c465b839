"""Signed tokens the shopper's app shows as QR: verified offline against trusted keys.

Coupons (`typ` `coupon+jwt`) and member codes (`member+jwt`) are JWS compact tokens signed
with Ed25519 (`alg` `EdDSA`), with a `kid` naming the key (ARCHITECTURE §5). Only that
algorithm and those key ids are accepted: a token that names another algorithm (`none`,
HS256 with the public key as its secret, ...), an unknown key, the wrong `typ`, or whose
bytes were edited is refused before any of its claims is believed.

Trusted keys are the JWK Set at `EDGE_TRUSTED_KEYS`, keys the hub sent (table
`trusted_keys`) and this store's own signing key, which signs the next-visit coupons
printed on its receipts.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from edge.datadir import DataDir
from edge.errors import StartupError
from edge.store import Store

log = logging.getLogger(__name__)
ALGORITHM = "EdDSA"
COUPON_TYP = "coupon+jwt"
MEMBER_TYP = "member+jwt"
MAX_TOKEN_CHARS = 4096


_JWS = jwt.PyJWS()


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


def store_signing_key(datadir: DataDir, store_id: str) -> SigningKey:
    """This store's signing key, created once in secrets/ (mode 0600) by `edge init`."""

    def make() -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate()))
        return {**jwk, "kid": f"store-{store_id}-1"}

    jwk = datadir.secret_json("signing-key", make)
    private = OKPAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(private, Ed25519PrivateKey)
    return SigningKey(str(jwk["kid"]), private)


class TrustedKeys:
    """The keys coupons and member codes may be signed with, by kid."""

    def __init__(self, store: Store, path: str, own: SigningKey | None = None) -> None:
        self.store = store
        self.path = Path(path).expanduser() if path else None
        self.own = own
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.generation = 0  # goes up on every reload, so callers can drop what they cached
        self.reload()

    def reload(self) -> None:
        """Re-read the file, the hub's keys and our own key (after sync or a key change)."""
        keys: dict[str, Ed25519PublicKey] = {}
        if self.path is not None:
            keys.update(load_jwks_file(self.path))
        for row in self.store.query("SELECT kid, jwk FROM trusted_keys"):
            try:
                keys[row["kid"]] = public_key_from_jwk(json.loads(row["jwk"]))
            except ValueError as exc:
                log.warning("ignoring trusted key %s from the hub: %s", row["kid"], exc)
        if self.own is not None:
            keys[self.own.kid] = self.own.private.public_key()
        self._keys = keys
        self.generation += 1
        log.debug("trusting %d signing keys", len(keys))

    def trust(self, jwks: dict[str, dict[str, Any]]) -> None:
        """Trust these keys at once, before the hub's key set is committed to the table (so
        coupons in the same page of changes can be read); `reload()` settles it after."""
        keys = dict(self._keys)
        keys.update({kid: public_key_from_jwk(jwk) for kid, jwk in jwks.items()})
        self._keys = keys
        self.generation += 1

    def verify(self, token: str, typ: str) -> dict[str, Any]:
        """The claims of a genuine token of this `typ`; raises TokenRejected otherwise.

        Times (`nbf`, `exp`) are not judged here: the coupon and member rules do that in
        the store's time zone.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("too_long")
        header = _peek_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenRejected("alg")
        got_typ = header.get("typ")
        if got_typ != typ:
            raise TokenRejected("typ", got_typ if isinstance(got_typ, str) else None)
        key = self._keys.get(header.get("kid"))  # type: ignore[arg-type]
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
        return claims
