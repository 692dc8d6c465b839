"""The HTTP contracts (docs/openapi-edge.yaml, docs/openapi-hub.yaml) against the real thing.

Each document must be valid OpenAPI 3.1; every route of the edge's and the hub's API
blueprints must be in its document and every documented operation must be a route; and a
real `edge serve` (on a real Mosquitto) and a real `edge-hub serve` are asked every
documented operation, error paths included. Every answer's status must be documented for
its operation, its body must match the documented schema of that status and content type,
and its documented required headers must be there. Each documented status is exercised: the
faults a healthy server does not give (FAULTS) in-process, by breaking one dependency.
"""


from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from edge.accounts import add_user
from edge.datadir import DataDir
from edge.devices import Enrolment
from edge.scanners import Target, add_scanner
from edge.settings import Settings
from edge.store import Store
from edge.supervise import stop_process
from store_contract.protocol import new_envelope
from tests.conftest import start_edge
from tests.hubfix import HubServer, event, hub_env_for, run_hub

DOCS = Path(__file__).resolve().parent.parent / "docs"
EDGE_DOC = DOCS / "openapi-edge.yaml"
HUB_DOC = DOCS / "openapi-hub.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Documented answers a healthy server does not give: a fault (500) or a database that does
# not answer (503). They are brought about in-process (test_*_faults_answer_as_documented).
FAULTS = {
    "edge": {("post", "/api/v1/pos/{device}/{method}", "500"),
             ("get", "/api/v1/devices", "500"),
             ("get", "/api/v1/scanners", "500"),
             ("get", "/metrics", "500"),
             ("get", "/healthz", "503")},
    "hub": {("post", "/api/v1/stores/{store_id}/events", "500"),
            ("get", "/api/v1/stores/{store_id}/changes", "500"),
            ("post", "/api/v1/stores/{store_id}/lookup", "500"),
            ("put", "/api/v1/stores/{store_id}/key", "500"),
            ("get", "/.well-known/jwks.json", "500"),
            ("get", "/healthz", "503")},
}
MONITOR_TOKEN = "monitor-token-for-the-test"
CASHIER_PW = "cashier-password-1"


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """One OpenAPI document, to check real answers against; remembers what it saw."""

    URI = "urn:store-edge:openapi"

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.registry: Registry[Any] = Registry().with_resource(
            self.URI, Resource.from_contents(doc, default_specification=DRAFT202012))
        self.seen: set[tuple[str, str, str]] = set()

    def _resolve(self, obj: dict[str, Any], *where: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A response object and its path in the document, following one `$ref`."""
        ref = obj.get("$ref")
        if ref is None:
            return obj, where
        parts = tuple(p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/"))
        target: Any = self.doc
        for p in parts:
            target = target[p]
        return target, parts

    def _valid(self, value: Any, *where: str) -> None:
        schema = {"$ref": self.URI + _pointer(*where)}
        jsonschema.Draft202012Validator(schema, registry=self.registry).validate(value)

    def check(self, method: str, path: str, resp: requests.Response) -> requests.Response:
        """Fail unless `resp` (to `method` on the documented `path`) is as documented."""
        method = method.lower()
        op = self.doc["paths"][path][method]
        status = str(resp.status_code)
        assert status in op["responses"], (
            f"{method.upper()} {path} answered {status}, which is not documented: {resp.text}")
        answer, where = self._resolve(op["responses"][status], "paths", path, method,
                                      "responses", status)
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        content = answer.get("content", {})
        assert media in content, (
            f"{method.upper()} {path} {status}: Content-Type {media!r} is not documented")
        if media.endswith("json"):
            body: Any = resp.json()
        else:
            body = resp.text
        try:
            self._valid(body, *where, "content", media, "schema")
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{method.upper()} {path} {status}: the body does not match "
                                 f"the documented schema: {exc.message}\n{resp.text[:2000]}"
                                 ) from None
        for name, header in answer.get("headers", {}).items():
            header, hwhere = self._resolve(header, *where, "headers", name)
            value = resp.headers.get(name)
            if header.get("required"):
                assert value is not None, f"{method.upper()} {path} {status}: no {name} header"
            if value is not None:
                self._valid(value, *hwhere, "schema")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and resp.status_code >= 400:
            # The error codes are part of the contract: each is named where its status is.
            named = re.search(rf"\b{re.escape(str(error['code']))}\b", json.dumps(answer))
            assert named, (
                f"{method.upper()} {path} {status}: the code {error['code']!r} is not named "
                "in the documented answer")
        self.seen.add((method, path, status))
        return resp

    def accepts(self, method: str, path: str, body: Any) -> None:
        """Fail unless `body`, a request the server took, matches the documented request
        body (the document must not ask for less, or other, than what works)."""
        where = ("paths", path, method, "requestBody", "content", "application/json",
                 "schema")
        try:
            self._valid(body, *where)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{method.upper()} {path}: a request the server took does "
                                 f"not match the documented body: {exc.message}") from None

    def documented(self) -> set[tuple[str, str, str]]:
        return {(method, path, status)
                for path, item in self.doc["paths"].items()
                for method, op in item.items() if method in HTTP_METHODS
                for status in op["responses"]}

    def operations(self) -> set[tuple[str, str]]:
        return {(method, path) for path, item in self.doc["paths"].items()
                for method in item if method in HTTP_METHODS}


def routes(app: Flask, blueprint: str) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route of `blueprint` in `app`."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != blueprint:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((method.lower(), path))
    return out


# ---------------------------------------------------------------- the documents themselves


@pytest.mark.parametrize("path", [EDGE_DOC, HUB_DOC], ids=["edge", "hub"])
def test_the_document_is_valid_openapi_3_1(path: Path) -> None:
    doc = load(path)
    assert doc["openapi"].startswith("3.1.")
    validate_openapi(doc)
    # The examples are part of the contract too: each matches its own schema.
    contract = Contract(doc)
    checked = 0
    for where, media in _media_objects(doc):
        for name, example in media.get("examples", {}).items():
            try:
                contract._valid(example["value"], *where, "schema")
            except jsonschema.ValidationError as exc:
                raise AssertionError(f"example {name} at {'/'.join(where)}: {exc.message}"
                                     ) from None
            checked += 1
    assert checked >= 5  # the walk found the examples


def _media_objects(doc: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            body = op.get("requestBody", {})
            for media, obj in body.get("content", {}).items():
                yield ("paths", path, method, "requestBody", "content", media), obj
            for status, resp in op["responses"].items():
                for media, obj in resp.get("content", {}).items():
                    yield ("paths", path, method, "responses", status, "content", media), obj
    for name, resp in doc.get("components", {}).get("responses", {}).items():
        for media, obj in resp.get("content", {}).items():
            yield ("components", "responses", name, "content", media), obj


@pytest.mark.app
def test_every_edge_api_route_is_documented_and_every_operation_is_a_route(
        settings: Settings) -> None:
    from edge.app import create_app

    app = create_app(settings)
    try:
        assert routes(app, "api") == Contract(load(EDGE_DOC)).operations()
    finally:
        app.extensions["edge"].stop()


@pytest.mark.app
def test_every_hub_api_route_is_documented_and_every_operation_is_a_route(
        tmp_path: Path) -> None:
    from cloud_sync.hub.app import create_app
    from cloud_sync.hub.settings import load_hub_settings

    app = create_app(load_hub_settings(hub_env_for(tmp_path / "hub-data", "", 0)))
    try:
        assert routes(app, "hub_api") == Contract(load(HUB_DOC)).operations()
    finally:
        app.extensions["hub"].db.dispose()


def test_the_documents_enumerate_what_the_code_has() -> None:
    """Kinds, types and methods the documents enumerate are the ones the code has."""
    from cloud_sync.hub.changelog import KINDS
    from edge.outbox import EVENT_TYPES
    from edge.pos import register_pos_methods
    from store_contract.protocol import DEVICE_KINDS, ID_PATTERN

    edge_doc, hub_doc = load(EDGE_DOC), load(HUB_DOC)
    edge_schemas, hub_schemas = edge_doc["components"]["schemas"], hub_doc["components"]["schemas"]
    assert set(hub_schemas["Event"]["properties"]["type"]["enum"]) == set(EVENT_TYPES)
    assert hub_schemas["Change"]["properties"]["kind"]["enum"] == list(KINDS)
    assert edge_schemas["Device"]["properties"]["kind"]["enum"] == list(DEVICE_KINDS)
    assert edge_schemas["Device"]["properties"]["id"]["pattern"] == f"^{ID_PATTERN}$"
    # Every method a lane may call is named in the POS route's `method` parameter.
    from edge.dispatch import Dispatcher, ReplyCache, register_builtin
    from edge.metrics import Metrics

    dispatcher = Dispatcher(Metrics(), ReplyCache(10, 60))
    register_builtin(dispatcher)
    checkout = SimpleNamespace(settings=SimpleNamespace(currency="EUR"))  # only registering
    register_pos_methods(dispatcher, checkout)  # type: ignore[arg-type]
    lane_methods = {m.name for m in dispatcher.methods.values() if "pos" in m.kinds}
    [param] = [p for p in edge_doc["paths"]["/api/v1/pos/{device}/{method}"]["post"]
               ["parameters"] if p["name"] == "method"]
    named = set(re.findall(r"`([a-z.]+)`", param["description"]))
    assert lane_methods and lane_methods == named


# ---------------------------------------------------------------- a real edge


@pytest.fixture
def edge_with_monitor(settings: Settings, broker: Any, store: Store,
                      enrolled: Callable[[str, str], Enrolment]
                      ) -> Iterator[tuple[str, Enrolment, Enrolment]]:
    """`edge serve` with a monitor token, a cashier `carl`, a lane and a printer."""
    add_user(store, "carl", CASHIER_PW, "cashier")
    lane, printer = enrolled("pos", "lane-7"), enrolled("printer", "printer-1")
    proc = start_edge(settings, {"EDGE_MONITOR_TOKEN": MONITOR_TOKEN})
    yield f"http://127.0.0.1:{settings.http_port}", lane, printer
    stop_process(proc)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_edge_answers_as_documented(
        edge_with_monitor: tuple[str, Enrolment, Enrolment], settings: Settings,
        store: Store) -> None:
    base, lane, printer = edge_with_monitor
    api = Contract(load(EDGE_DOC))
    pos = "/api/v1/pos/{device}/{method}"

    def call(device: str, method: str, body: bytes | str, headers: dict[str, str] | None = None
             ) -> requests.Response:
        resp = requests.post(f"{base}/api/v1/pos/{device}/{method}", data=body,
                             headers={"Content-Type": "application/json", **(headers or {})},
                             timeout=10)
        return api.check("post", pos, resp)

    lane_auth = _bearer(lane.password)
    ping = new_envelope("ping", {"echo": "hello"})
    done = call("lane-7", "ping", ping.to_json(), lane_auth).json()
    assert done["ok"] and done["re"] == ping.id and done["data"]["echo"] == "hello"
    api.accepts("post", pos, json.loads(ping.to_json()))
    # The same id with other data, a broken envelope, an unknown method, a refused sale:
    # all still 200, with the error in the reply envelope.
    reused = json.loads(ping.to_json())
    reused["data"] = {"echo": "other"}
    done = call("lane-7", "ping", json.dumps(reused), lane_auth).json()
    assert not done["ok"] and done["error"]["detail"]["reason"] == "id_reused"
    done = call("lane-7", "ping", '{"v": 1, "id": "nope"}', lane_auth).json()
    assert not done["ok"] and done["re"] is None and done["error"]["code"] == "bad_request"
    done = call("lane-7", "no.such", new_envelope("no.such").to_json(), lane_auth).json()
    assert not done["ok"] and done["error"]["code"] == "bad_request"
    done = call("lane-7", "identify", new_envelope(
        "identify", {"txn": "h-1", "code": "700000000009"}).to_json(), lane_auth).json()
    assert not done["ok"] and done["error"]["code"] == "customer_unknown"
    done = call("lane-7", "ping", b"\xff not json", lane_auth).json()
    assert not done["ok"] and done["error"]["code"] == "bad_request"
    # Who is calling.
    assert call("lane-7", "ping", ping.to_json()).status_code == 401
    assert call("lane-7", "ping", ping.to_json(), {"Authorization": "Basic eDp5"}
                ).status_code == 401
    assert call("lane-7", "ping", ping.to_json(), _bearer("wrong")).status_code == 401
    assert call("Lane_7", "ping", ping.to_json(), lane_auth).status_code == 401
    assert call("printer-1", "ping", ping.to_json(), _bearer(printer.password)
                ).status_code == 401
    too_big = b"x" * (settings.http_max_body_bytes + 1)
    resp = call("lane-7", "ping", too_big, lane_auth)
    assert resp.status_code == 413

    devices = "/api/v1/devices"
    resp = api.check("get", devices, requests.get(base + devices, headers=_basic(
        "carl", CASHIER_PW), timeout=10))
    assert resp.status_code == 200
    assert {(d["kind"], d["id"]) for d in resp.json()["devices"]} == {
        ("pos", "lane-7"), ("printer", "printer-1")}
    for headers in ({}, _basic("carl", "wrong-password"), _basic("nobody", CASHIER_PW)):
        resp = api.check("get", devices, requests.get(base + devices, headers=headers,
                                                      timeout=10))
        assert resp.status_code == 401

    scanners = "/api/v1/scanners"
    add_scanner(settings, DataDir(settings.data_path), store, "scan-1", Target("pos", "lane-7"))
    resp = api.check("get", scanners, requests.get(base + scanners, headers=_basic(
        "carl", CASHIER_PW), timeout=10))
    assert resp.status_code == 200
    assert [(s["id"], s["sends_to"]) for s in resp.json()["scanners"]] == [("scan-1", "lane-7")]
    resp = api.check("get", scanners, requests.get(base + scanners, timeout=10))
    assert resp.status_code == 401

    resp = api.check("get", "/healthz", requests.get(base + "/healthz", timeout=10))
    assert resp.status_code == 200 and set(resp.json()) == {"status"}
    resp = api.check("get", "/healthz", requests.get(base + "/healthz",
                                                     headers=_bearer(MONITOR_TOKEN), timeout=10))
    assert resp.status_code == 200 and resp.json()["store"] == settings.store_id

    resp = api.check("get", "/metrics", requests.get(base + "/metrics", timeout=10))
    assert resp.status_code == 401
    resp = api.check("get", "/metrics", requests.get(
        base + "/metrics", headers=_bearer("not-the-token"), timeout=10))
    assert resp.status_code == 401
    resp = api.check("get", "/metrics", requests.get(
        base + "/metrics", headers=_bearer(MONITOR_TOKEN), timeout=10))
    assert resp.status_code == 200 and "# TYPE" in resp.text
    example = api.doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"][
        "text/plain"]["example"]
    assert [line for line in example.splitlines() if line.startswith("#")], example
    for line in example.splitlines():
        if line.startswith("#"):  # the example's metric is the edge's, as it describes it
            assert line in resp.text.splitlines(), line
    resp = api.check("get", "/metrics", requests.get(
        base + "/metrics", timeout=10, headers={
            **_bearer(MONITOR_TOKEN), "Accept": "application/openmetrics-text; version=1.0.0"}))
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")

    assert api.documented() - api.seen == FAULTS["edge"]


# ---------------------------------------------------------------- a real hub


@pytest.fixture
def hub_db_url() -> str:
    """SQLite only: the document describes HTTP, which is the same on either database."""
    return ""


@pytest.fixture
def hub_settings(tmp_path: Path, hub_db_url: str) -> Any:
    """A hub that takes batches of at most 3 events and 64 KiB."""
    from cloud_sync.hub.settings import load_hub_settings

    return replace(load_hub_settings(hub_env_for(tmp_path / "hub-data", hub_db_url, 0)),
                   max_batch_events=3, max_batch_bytes=64 * 1024)


def _store_jwk(store_id: str, serial: int) -> dict[str, Any]:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": f"store-{store_id}-{serial}"}


def test_the_hub_answers_as_documented(hub_server: HubServer, hub_store: Callable[..., str],
                                       tmp_path: Path) -> None:
    api = Contract(load(HUB_DOC))
    base = hub_server.url
    t1, t2 = hub_store("s1"), hub_store("s2")
    customers = tmp_path / "customers.jsonl"
    customers.write_text(json.dumps({"id": "c-ann", "display_name": "Ann", "region": "north",
                                     "email": "ann@example.net"}) + "\n")
    done = run_hub(hub_server.settings, "customers", "import", str(customers))
    assert done.returncode == 0, done.stderr
    products = tmp_path / "products.csv"  # a product, and another one removed: both kinds
    products.write_text("sku,name,price,categories,currency\n4006381333931,Pen,1.99,office,EUR\n"
                        "8000070,Coffee,7.99,,EUR\n")
    for args in (("import", str(products)), ("remove", "8000070")):
        done = run_hub(hub_server.settings, "products", *args)
        assert done.returncode == 0, done.stderr

    def send(method: str, path: str, store: str, token: str | None, body: Any = None,
             **kwargs: Any) -> requests.Response:
        headers = _bearer(token) if token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
            kwargs["data"] = body if isinstance(body, bytes | str) else json.dumps(body)
        resp = requests.request(method, base + path.replace("{store_id}", store),
                                headers=headers, timeout=30, **kwargs)
        if resp.status_code == 200 and isinstance(body, dict):
            api.accepts(method, path, body)
        return api.check(method, path, resp)

    def code(resp: requests.Response) -> tuple[int, str | None]:
        body = resp.json()
        return resp.status_code, body["error"]["code"] if "error" in body else None

    events = "/api/v1/stores/{store_id}/events"
    ev = event("s1")
    resp = send("post", events, "s1", t1, {"batch_id": "b-1", "events": [ev],
                                           "edge": {"queue_depth": 1, "oldest_age_s": -3}})
    assert resp.status_code == 200 and resp.json()["accepted"] == [ev["event_id"]]
    resp = send("post", events, "s1", t1, {"batch_id": "b-1", "events": [ev]})
    assert resp.json()["duplicates"] == [ev["event_id"]]
    resp = send("post", events, "s2", t2, {"batch_id": "b-9", "events": [
        {**ev, "store_id": "s2"}]})
    assert resp.json()["rejected"] == [{"event_id": ev["event_id"], "error": "event_id_taken"}]
    assert code(send("post", events, "s1", t1, "{not json")) == (400, "bad_json")
    assert code(send("post", events, "s1", t1, {"events": [ev]})) == (400, "bad_batch")
    resp = send("post", events, "s1", t1, {"batch_id": "b-2", "events": [
        event("s1"), {"type": "device.status"}]})
    assert code(resp) == (400, "bad_events")
    assert resp.json()["error"]["detail"]["rejected"][0]["index"] == 1
    assert code(send("post", events, "s1", None, {"batch_id": "b", "events": [ev]})) == (
        401, "unauthorized")
    assert code(send("post", events, "s1", "not-a-token", {"batch_id": "b", "events": [ev]})
                ) == (401, "unauthorized")
    assert code(send("post", events, "s1", t2, {"batch_id": "b", "events": [ev]})) == (
        403, "wrong_store")
    resp = send("post", events, "s1", t1, {"batch_id": "b-3",
                                           "events": [event("s1") for _ in range(4)]})
    assert code(resp) == (413, "batch_too_large")
    assert resp.json()["error"]["detail"] == {"max_events": 3}
    big = {"batch_id": "b-4", "events": [event("s1", data={"pad": "x" * 70_000})]}
    assert code(send("post", events, "s1", t1, big)) == (413, "batch_too_large")

    changes = "/api/v1/stores/{store_id}/changes"
    resp = send("get", changes, "s1", t1)
    page = resp.json()
    assert resp.status_code == 200 and page["changes"]
    assert [(c["product"]["sku"], c.get("deleted", False)) for c in page["changes"]
            if c["kind"] == "product"] == [("4006381333931", False), ("8000070", True)]
    resp = send("get", changes, "s1", t1, params={"cursor": page["cursor"], "limit": "1"})
    assert resp.status_code == 200 and resp.json()["changes"] == []
    assert code(send("get", changes, "s1", t1, params={"cursor": "abc"})) == (400, "bad_cursor")
    assert code(send("get", changes, "s1", t1, params={"limit": "0"})) == (400, "bad_limit")
    assert code(send("get", changes, "s1", None)) == (401, "unauthorized")
    assert code(send("get", changes, "s1", t2)) == (403, "wrong_store")

    key = "/api/v1/stores/{store_id}/key"
    jwk = _store_jwk("s1", 1)
    resp = send("put", key, "s1", t1, jwk)
    assert resp.status_code == 200 and resp.json() == {"store": "s1", "kid": jwk["kid"],
                                                       "changed": True}
    assert send("put", key, "s1", t1, jwk).json()["changed"] is False
    assert code(send("put", key, "s1", t1, {**jwk, "d": jwk["x"]})) == (400, "bad_key")
    assert code(send("put", key, "s1", t1, {**jwk, "kid": "store-s2-1"})) == (400, "bad_key")
    assert code(send("put", key, "s1", t1, "[")) == (400, "bad_json")
    assert code(send("put", key, "s1", None, jwk)) == (401, "unauthorized")
    assert code(send("put", key, "s1", t2, jwk)) == (403, "wrong_store")
    assert code(send("put", key, "s1", t1, "x" * 70_000)) == (413, "batch_too_large")
    revoked = _store_jwk("s1", 2)
    done = run_hub(hub_server.settings, "keys", "revoke", revoked["kid"])
    assert done.returncode == 0, done.stderr
    assert code(send("put", key, "s1", t1, revoked)) == (409, "key_revoked")

    resp = api.check("get", "/.well-known/jwks.json",
                     requests.get(base + "/.well-known/jwks.json", timeout=10))
    assert resp.status_code == 200
    assert {"kid": jwk["kid"], "store": "s1"}.items() <= next(
        k for k in resp.json()["keys"] if k.get("store") == "s1").items()
    resp = api.check("get", "/healthz", requests.get(base + "/healthz", timeout=10))
    assert resp.json() == {"status": "ok", "database": {"ok": True}}

    lookup = "/api/v1/stores/{store_id}/lookup"
    resp = send("post", lookup, "s1", t1, {"kind": "email", "value": "ann@example.net"})
    assert resp.status_code == 200 and resp.json()["customer"]["id"] == "c-ann"
    assert code(send("post", lookup, "s1", t1, {"kind": "email", "value": "who@example.net"})
                ) == (404, "customer_unknown")
    assert code(send("post", lookup, "s1", t1, {"kind": "shoe", "value": "42"})) == (
        400, "bad_lookup")
    assert code(send("post", lookup, "s1", t1, {"kind": "member", "token": "a.b.c"})) == (
        400, "bad_member_code")
    assert code(send("post", lookup, "s1", t1, "nope")) == (400, "bad_json")
    assert code(send("post", lookup, "s1", None, {})) == (401, "unauthorized")
    assert code(send("post", lookup, "s1", t2, {})) == (403, "wrong_store")
    assert code(send("post", lookup, "s1", t1, "x" * 70_000)) == (413, "batch_too_large")
    for _ in range(hub_server.settings.lookup_per_minute + 1):
        resp = send("post", lookup, "s2", t2, {"kind": "email", "value": "who@example.net"})
        if resp.status_code == 429:
            break
    assert code(resp) == (429, "too_many_lookups")
    assert int(resp.headers["Retry-After"]) >= 1

    assert api.documented() - api.seen == FAULTS["hub"]


# ---------------------------------------------------------------- faults, in-process


def _as_requests(resp: Any) -> requests.Response:
    """A Flask test response as a `requests.Response`, for `Contract.check`."""
    out = requests.Response()
    out.status_code = resp.status_code
    out.headers.update(dict(resp.headers))
    out._content = resp.get_data()
    return out


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a fault for the test")


@pytest.mark.app
def test_edge_faults_answer_as_documented(settings: Settings, store: Store,
                                          enrolled: Callable[[str, str], Enrolment],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from edge.app import api as edge_api
    from edge.app import create_app

    add_user(store, "carl", CASHIER_PW, "cashier")
    lane = enrolled("pos", "lane-7")
    app = create_app(settings)
    contract = Contract(load(EDGE_DOC))
    client = app.test_client()
    try:
        monkeypatch.setattr(edge_api, "authenticate", _boom)
        monkeypatch.setattr(edge_api, "list_devices", _boom)
        monkeypatch.setattr(edge_api, "list_scanners", _boom)
        monkeypatch.setattr(edge_api, "choose_encoder", _boom)
        resp = client.post("/api/v1/pos/lane-7/ping", data=new_envelope("ping").to_json(),
                           headers=_bearer(lane.password))
        contract.check("post", "/api/v1/pos/{device}/{method}", _as_requests(resp))
        for path in ("/api/v1/devices", "/api/v1/scanners"):
            resp = client.get(path, headers=_basic("carl", CASHIER_PW))
            contract.check("get", path, _as_requests(resp))
        resp = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        contract.check("get", "/metrics", _as_requests(resp))

        def unreadable() -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(app.extensions["edge"].store, "check", unreadable)
        for remote in ("127.0.0.1", "192.0.2.7"):  # the monitor's report; anyone's answer
            resp = client.get("/healthz", environ_base={"REMOTE_ADDR": remote})
            contract.check("get", "/healthz", _as_requests(resp))
            assert resp.get_json()["status"] == "failing"
    finally:
        app.extensions["edge"].stop()
    assert contract.seen == FAULTS["edge"]


@pytest.mark.app
def test_hub_faults_answer_as_documented(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud_sync.hub import api as hub_api
    from cloud_sync.hub.app import create_app
    from cloud_sync.hub.settings import load_hub_settings

    app = create_app(load_hub_settings(hub_env_for(tmp_path / "hub-data", "", 0)))
    contract = Contract(load(HUB_DOC))
    client = app.test_client()
    db = app.extensions["hub"].db
    try:
        monkeypatch.setattr(hub_api.stores, "authenticate", _boom)
        monkeypatch.setattr(hub_api.feed, "jwk_set", _boom)
        auth = _bearer("any-token")
        calls: list[tuple[str, str, dict[str, Any] | None]] = [
            ("post", "/api/v1/stores/{store_id}/events", {}),
            ("get", "/api/v1/stores/{store_id}/changes", None),
            ("post", "/api/v1/stores/{store_id}/lookup", {}),
            ("put", "/api/v1/stores/{store_id}/key", {}),
            ("get", "/.well-known/jwks.json", None)]
        for method, path, body in calls:
            resp = client.open(path.replace("{store_id}", "s1"), method=method.upper(),
                               json=body, headers=auth)
            contract.check(method, path, _as_requests(resp))
        monkeypatch.setattr(db, "read", _boom)
        resp = client.get("/healthz")
        contract.check("get", "/healthz", _as_requests(resp))
        assert resp.get_json()["status"] == "unavailable"
    finally:
        monkeypatch.undo()
        db.dispose()
    assert contract.seen == FAULTS["hub"]


# ---------------------------------------------------------------- the checks can fail


def test_a_schema_that_differs_from_the_answers_is_caught() -> None:
    """The checker refuses an answer that does not match: a renamed required field, a
    status the document does not list, a body of another shape."""
    doc = load(HUB_DOC)
    broken = copy.deepcopy(doc)
    schema = broken["components"]["schemas"]["KeyResult"]
    schema["required"] = ["store", "key_id", "changed"]
    schema["properties"]["key_id"] = schema["properties"].pop("kid")

    def answer(status: int, body: Any) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp.headers["Content-Type"] = "application/json"
        resp._content = json.dumps(body).encode()
        return resp

    good = answer(200, {"store": "s1", "kid": "store-s1-1", "changed": True})
    path = "/api/v1/stores/{store_id}/key"
    Contract(doc).check("put", path, good)
    with pytest.raises(AssertionError, match="documented schema"):
        Contract(broken).check("put", path, good)
    with pytest.raises(AssertionError, match="not documented"):
        Contract(doc).check("put", path, answer(418, {"error": {"code": "x", "message": "y"}}))
    with pytest.raises(AssertionError, match="documented schema"):
        Contract(doc).check("put", path, answer(409, {"error": "key_revoked"}))
    plain = answer(200, {})
    plain.headers["Content-Type"] = "text/html"
    with pytest.raises(AssertionError, match="Content-Type"):
        Contract(doc).check("put", path, plain)


@pytest.mark.app
def test_a_route_missing_from_the_document_is_caught(settings: Settings) -> None:
    """A new route of the API blueprint, not in the document, makes the sets differ."""
    from edge.app import create_app

    app = create_app(settings)
    try:
        app.add_url_rule("/api/v1/undocumented", endpoint="api.undocumented",
                         view_func=lambda: "{}")
        documented = Contract(load(EDGE_DOC)).operations()
        assert routes(app, "api") - documented == {("get", "/api/v1/undocumented")}
    finally:
        app.extensions["edge"].stop()
