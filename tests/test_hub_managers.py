"""Hub manager accounts on both databases, PostgreSQL with real concurrency: wrong passwords
are counted before any hash is checked, per manager and client, so forty guesses at once get
five tries and one machine cannot lock a manager out elsewhere; a new password ends the
manager's open dashboard sessions at once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from cloud_sync.hub import managers as managers_module
from cloud_sync.hub.app import create_app
from cloud_sync.hub.db import HubDB
from cloud_sync.hub.managers import add_manager, authenticate
from cloud_sync.hub.settings import HubSettings
from tests.conftest import at_once
from tests.hubfix import run_hub

PASSWORD = "mia-password-1"


@pytest.fixture
def db(hub_settings: HubSettings) -> Iterator[HubDB]:
    hub_db = HubDB(hub_settings.db_url)
    add_manager(hub_db, "mia", PASSWORD, "north")
    yield hub_db
    hub_db.dispose()


def test_forty_wrong_passwords_at_once_get_five_tries_and_lock_only_that_client(
        db: HubDB, monkeypatch: pytest.MonkeyPatch) -> None:
    real_checks: list[str] = []
    check = managers_module._check_hash

    def counting(stored: str, password: str) -> bool:
        if stored != managers_module._DUMMY_HASH:
            real_checks.append(password)
        return check(stored, password)

    monkeypatch.setattr(managers_module, "_check_hash", counting)
    results = at_once([lambda i=i: authenticate(  # type: ignore[misc]
        db, "mia", f"wrong-password-{i}", client="10.0.0.66") for i in range(40)], timeout=120)
    assert results == [None] * 40
    assert len(real_checks) == 5  # the other 35 were refused before the account's hash
    # That machine is locked out, even with the right password ...
    assert authenticate(db, "mia", PASSWORD, client="10.0.0.66") is None
    assert len(real_checks) == 5
    # ... and the manager still signs in from her own.
    mia = authenticate(db, "mia", PASSWORD, client="10.0.0.7")
    assert mia is not None and mia.username == "mia"


def test_one_machine_guessing_many_names_is_locked_for_all_of_them(db: HubDB) -> None:
    add_manager(db, "olaf", "olaf-password-1", "south")
    for i in range(20):
        assert authenticate(db, f"nobody-{i}", "wrong-password", client="10.0.0.66") is None
    assert authenticate(db, "olaf", "olaf-password-1", client="10.0.0.66") is None
    assert authenticate(db, "olaf", "olaf-password-1", client="10.0.0.8") is not None


def _sign_in(client: FlaskClient, username: str, password: str) -> None:
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    client.post("/login", data={"csrf_token": token[1], "username": username,
                                "password": password})


def test_a_new_password_ends_the_managers_open_sessions_at_once(
        hub_settings: HubSettings, db: HubDB) -> None:
    add_manager(db, "olaf", "olaf-password-1", "south")
    app = create_app(hub_settings, db)
    mia, other_mia, olaf = app.test_client(), app.test_client(), app.test_client()
    _sign_in(mia, "mia", PASSWORD)
    _sign_in(other_mia, "mia", PASSWORD)
    _sign_in(olaf, "olaf", "olaf-password-1")
    for client in (mia, other_mia, olaf):
        assert client.get("/dashboard.json").status_code == 200
    done = run_hub(hub_settings, "managers", "add", "mia", "--region", "north", "--replace",
                   "--password-stdin", input="a-new-password-1\n")
    assert done.returncode == 0, done.stderr
    assert mia.get("/dashboard.json").status_code == 401
    assert other_mia.get("/dashboard.json").status_code == 401
    assert olaf.get("/dashboard.json").status_code == 200  # nobody else's
    _sign_in(mia, "mia", PASSWORD)  # the old password no longer works
    assert mia.get("/dashboard.json").status_code == 401
    _sign_in(mia, "mia", "a-new-password-1")
    assert mia.get("/dashboard.json").status_code == 200


def test_a_new_password_forgets_the_old_guesses(db: HubDB) -> None:
    for _ in range(5):
        assert authenticate(db, "mia", "wrong-password", client="10.0.0.66") is None
    assert authenticate(db, "mia", PASSWORD, client="10.0.0.66") is None
    add_manager(db, "mia", "a-new-password-1", "north", replace=True)
    manager: Any = authenticate(db, "mia", "a-new-password-1", client="10.0.0.66")
    assert manager is not None
