"""The hub's signing key, the stores' published keys, and tokens the hub issues.

The hub signs app coupons and member codes with its Ed25519 key (kid `hub-1`, kept in
secrets/signing-key.json, mode 0600). Each store publishes the public half of the key it
signs receipt coupons with; the feed sends the whole set to every store, so a receipt
coupon from one store is honoured at the others.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import delete, select, update

from cloud_sync.hub.context import hub_datadir
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.feed import publish_keys
from cloud_sync.hub.schema import (
    campaigns,
    chain_keys,
    customers,
    issued_coupons,
    revoked_keys,
    stores,
)
from cloud_sync.hub.settings import HubSettings
from store_contract.campaigns import COUPON_ID_RE, parse_until, until_exp
from store_contract.customers import CUSTOMER_ID_RE
from store_contract.errors import BadRequest, Conflict, NotFound
from store_contract.jws import (
    COUPON_TYP,
    MEMBER_TYP,
    SigningKey,
    public_key_from_jwk,
    store_kid_pattern,
    store_of_kid,
)
from store_contract.protocol import format_ts, parse_ts, uuid7

HUB_KID = "hub-1"
MEMBER_MAX_MINUTES = 5  # docs/checkout.md §12: a member code lives at most 5 minutes
_PUBLIC_FIELDS = ("kty", "crv", "x", "kid", "use", "alg")
KID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")


def hub_signing_key(settings: HubSettings) -> SigningKey:
    """The hub's key, created on first use in the data dir's secrets/."""
    def make() -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate()))
        return {**jwk, "kid": HUB_KID}

    jwk = hub_datadir(settings).secret_json("signing-key", make)
    private = OKPAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(private, Ed25519PrivateKey)
    return SigningKey(str(jwk["kid"]), private)


def check_store_jwk(store_id: str, jwk: Any) -> dict[str, Any]:
    """The public part of a store's key as it will be published; BadRequest otherwise."""
    if not isinstance(jwk, dict):
        raise BadRequest("The body must be the store's public JWK (a JSON object).",
                         code="bad_key")
    if "d" in jwk:
        # Never keep or pass on a private key, even one sent by mistake.
        raise BadRequest("That is a private key; send only the public part (no \"d\").",
                         code="bad_key")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not store_kid_pattern(store_id).match(kid):
        raise BadRequest(f"The key's kid must be store-{store_id}- followed by digits only.",
                         code="bad_key")
    try:
        public_key_from_jwk(jwk)
    except ValueError as exc:
        raise BadRequest(f"Not an Ed25519 public key: {exc}.", code="bad_key") from None
    if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
        raise BadRequest("The key must be for EdDSA signatures.", code="bad_key")
    return {**{k: jwk[k] for k in _PUBLIC_FIELDS if k in jwk}, "use": "sig", "alg": "EdDSA"}


def put_store_key(db: HubDB, hub_key: SigningKey, store_id: str, jwk: Any) -> dict[str, Any]:
    """Save a store's public key; the feed gets a new key set if it changed. A revoked kid
    is refused (409 `key_revoked`): the store must make a new key (`edge keys rotate`)."""
    public = check_store_jwk(store_id, jwk)
    text = json.dumps(public, sort_keys=True, separators=(",", ":"))
    with db.write() as conn:
        if conn.execute(select(revoked_keys.c.kid)
                        .where(revoked_keys.c.kid == public["kid"])).first() is not None:
            raise Conflict(f"The key {public['kid']} was revoked; make a new one with "
                           "`edge keys rotate` on the store box.", code="key_revoked")
        old = conn.execute(select(stores.c.public_jwk).where(stores.c.id == store_id)).scalar()
        changed = old != text
        if changed:
            conn.execute(update(stores).where(stores.c.id == store_id).values(public_jwk=text))
    if changed:
        publish_keys(db, hub_key)
    return {"store": store_id, "kid": public["kid"], "changed": changed}


def add_chain_keys(db: HubDB, hub_key: SigningKey, doc: Any) -> dict[str, Any]:
    """Trust the chain's app keys (a public JWK or a JWK Set): they sign coupons and member
    codes like the hub's key, go to every store in the key set, and let the hub believe
    redemptions of the coupons they signed."""
    keys = doc.get("keys") if isinstance(doc, dict) and "keys" in doc else [doc]
    if not isinstance(keys, list) or not keys:
        raise BadRequest("Give a public JWK or a JWK Set {\"keys\": [...]}.", code="bad_key")
    rows: dict[str, str] = {}
    for jwk in keys:
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(kid, str) or not KID_RE.match(kid):
            raise BadRequest("Every key needs a kid of 1-64 letters, digits and ._:-.",
                             code="bad_key")
        if kid == hub_key.kid or store_of_kid(kid) is not None or kid.startswith("store-"):
            raise BadRequest(f"{kid} names the hub's or a store's key; give the app's key "
                             "another kid.", code="bad_key")
        assert isinstance(jwk, dict)
        if "d" in jwk:
            raise BadRequest(f"{kid} is a private key; give only the public part (no \"d\").",
                             code="bad_key")
        try:
            public_key_from_jwk(jwk)
        except ValueError as exc:
            raise BadRequest(f"{kid}: not an Ed25519 public key: {exc}.", code="bad_key"
                             ) from None
        public = {**{k: jwk[k] for k in _PUBLIC_FIELDS if k in jwk}, "use": "sig",
                  "alg": "EdDSA"}
        rows[kid] = json.dumps(public, sort_keys=True, separators=(",", ":"))
    now = time.time()
    with db.write() as conn:
        revoked: set[str] = set(conn.execute(
            select(revoked_keys.c.kid).where(revoked_keys.c.kid.in_(list(rows)))).scalars())
        if revoked:
            raise Conflict(f"{', '.join(sorted(revoked))} was revoked; give the key a new kid.",
                           code="key_revoked")
        for kid, text in rows.items():
            conn.execute(delete(chain_keys).where(chain_keys.c.kid == kid))
            conn.execute(chain_keys.insert().values(kid=kid, jwk=text, added_ts=now))
    publish_keys(db, hub_key)
    return {"added": sorted(rows)}


def revoke_key(db: HubDB, hub_key: SigningKey, kid: str, reason: str | None = None
               ) -> dict[str, Any]:
    """Stop trusting a store's or an app key everywhere: out of the JWKS, and out of every
    edge at its next pull. The hub's own key cannot be revoked this way."""
    if not isinstance(kid, str) or not 0 < len(kid) <= 128:
        raise BadRequest(f"{kid!r} is not a key id", code="bad_kid")
    owner = store_of_kid(kid)
    with db.read() as conn:
        chain = conn.execute(select(chain_keys.c.kid).where(chain_keys.c.kid == kid)).first()
    if owner is None and chain is None:
        raise BadRequest(f"{kid} is neither a store's key (store-ID-N) nor an app key added "
                         "with `keys add`; the hub's own key cannot be revoked here.",
                         code="bad_kid")
    now = time.time()
    with db.write() as conn:
        conn.execute(delete(chain_keys).where(chain_keys.c.kid == kid))
        if conn.execute(select(revoked_keys.c.kid).where(revoked_keys.c.kid == kid)
                        ).first() is None:
            conn.execute(revoked_keys.insert().values(kid=kid, store_id=owner,
                                                      reason=(reason or "")[:200],
                                                      revoked_ts=now))
        for store_id, text in conn.execute(select(stores.c.id, stores.c.public_jwk)
                                           .where(stores.c.public_jwk.isnot(None))).all():
            if json.loads(str(text)).get("kid") == kid:
                conn.execute(update(stores).where(stores.c.id == store_id)
                             .values(public_jwk=None))
    publish_keys(db, hub_key)
    return {"kid": kid, "store": owner, "revoked": True}


def issue_coupon(db: HubDB, key: SigningKey, campaign_id: str, customer: str | None = None,
                 max_uses: int | None = None, days: int | None = None,
                 not_before: datetime | None = None, until: date | None = None,
                 zone: ZoneInfo | None = None) -> tuple[str, str]:
    """Sign a coupon of a stored campaign (its terms become the claims); (jti, token).

    The coupon lasts until the end of a local date (`until`, or today in the hub's `zone` +
    `days`, 30 by default), judged by each store in its own zone; its `exp` is the end of
    that date in the last zone on earth (`until_exp`), never past the campaign's `ends_at`.
    The coupon is recorded so the hub knows its `max` when its redemptions sync.
    """
    if max_uses is not None and not 1 <= max_uses <= 10_000:
        raise BadRequest("--max must be from 1 to 10000", code="bad_max")
    if days is not None and until is not None:
        raise BadRequest("Give --until or --days, not both.", code="bad_until")
    if days is not None and not 1 <= days <= 3660:
        raise BadRequest("--days must be from 1 to 3660", code="bad_days")
    today = datetime.now(zone or UTC).date()
    if until is None:
        until = today + timedelta(days=30 if days is None else days)
    elif not today <= until <= today + timedelta(days=3660):
        raise BadRequest(f"--until must be a date from today ({today.isoformat()}) to ten "
                         "years ahead", code="bad_until")
    if customer is not None and not CUSTOMER_ID_RE.match(customer):
        raise BadRequest(f"{customer!r} is not a customer id", code="bad_customer_id")
    if not COUPON_ID_RE.match(campaign_id):
        raise BadRequest(f"{campaign_id!r} is not a campaign id", code="bad_campaign_id")
    with db.read() as conn:
        text = conn.execute(select(campaigns.c.record)
                            .where(campaigns.c.id == campaign_id)).scalar()
        if customer is not None and conn.execute(
                select(customers.c.id).where(customers.c.id == customer)).first() is None:
            raise NotFound(f"The hub has no customer {customer}; import it first.",
                           code="customer_unknown")
    if text is None:
        raise NotFound(f"The hub has no campaign {campaign_id}; import it first.",
                       code="campaign_unknown")
    record = json.loads(text)
    start = not_before or datetime.now(UTC)
    nbf = int(start.timestamp())
    # The campaign's own dates bound the coupon's: its local end date, then its instants.
    if campaign_until := parse_until(record.get("until")):
        until = min(until, campaign_until)
    exp = until_exp(until)
    for field, pick in (("starts_at", max), ("ends_at", min)):
        if record.get(field):
            bound = int(parse_ts(record[field]).timestamp())
            if field == "starts_at":
                nbf = pick(nbf, bound)
            else:
                exp = pick(exp, bound)
    if exp <= nbf or until < today:
        raise BadRequest(f"Campaign {campaign_id} has ended; no coupon can be issued.",
                         code="campaign_ended")
    jti = uuid7()
    claims: dict[str, Any] = {"jti": jti, "cmp": campaign_id, "nbf": nbf, "exp": exp,
                              "until": until.isoformat(), "max": max_uses or 1}
    claims.update({k: record[k] for k in ("disc", "min_minor", "skus", "cats", "stack", "off")
                   if k in record})
    if customer is not None:
        claims["sub"] = customer
    token = key.sign(claims, COUPON_TYP)
    with db.write() as conn:
        conn.execute(issued_coupons.insert().values(
            id=jti, campaign_id=campaign_id, customer_id=customer, max_uses=claims["max"],
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            expires_ts=float(exp), issued_ts=time.time()))
    return jti, token


def issue_member(key: SigningKey, customer_id: str, minutes: int = 5) -> tuple[str, str]:
    """A member code for the app to show; (token, expires_at RFC 3339)."""
    if not CUSTOMER_ID_RE.match(customer_id):
        raise BadRequest(f"{customer_id!r} is not a customer id", code="bad_customer_id")
    if not 1 <= minutes <= MEMBER_MAX_MINUTES:
        raise BadRequest(f"a member code lives 1 to {MEMBER_MAX_MINUTES} minutes",
                         code="bad_minutes")
    iat = int(time.time())
    exp = iat + minutes * 60
    token = key.sign({"sub": customer_id, "iat": iat, "exp": exp, "jti": uuid7()}, MEMBER_TYP)
    return token, format_ts(datetime.fromtimestamp(exp, UTC))


def qr_png(text: str) -> bytes:
    """A QR code of `text` as PNG bytes (error correction M: survives a scuffed screen)."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=8, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image().save(buf)
    return buf.getvalue()
