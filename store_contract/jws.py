"""Signed tokens the shopper's app shows as QR, verified offline (docs/checkout.md).

Coupons (`typ` `coupon+jwt`) and member codes (`member+jwt`) are JWS compact tokens signed
with Ed25519 (`alg` `EdDSA`), with a `kid` naming the key. Only that algorithm and those key
ids are accepted: a token that names another algorithm (`none`, HS256 with the public key as
its secret, ...), an unknown key, the wrong `typ`, or whose bytes were edited is refused
before any of its claims is believed.

Keys differ in what they may sign (docs/checkout.md, "Who signs what"). A chain key (the
hub's, the app's) signs coupons and member codes. A store key (kid `store-{store}-{n}`,
marked with the store it belongs to) signs only that store's receipt offers: never a member
code. The edge (edge/tokens.py) and the hub use this one verifier.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

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
