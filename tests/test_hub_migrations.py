"""The hub's database versions (cloud_sync/hub/schema_version.py, migrations/): on SQLite and
PostgreSQL, the migrations make exactly the schema of schema.py, a database made before
migrations is adopted with its data, an older revision waits for `edge-hub migrate`, and
a newer one is refused in one line."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import MetaData, create_engine, inspect, text

from cloud_sync.hub import schema_version
from cloud_sync.hub.db import HubDB, engine_url
from cloud_sync.hub.schema import metadata
from cloud_sync.hub.schema_version import SchemaError, differences, upgrade, version
from cloud_sync.hub.settings import HubSettings, load_hub_settings
from tests.hubfix import hub_env_for, run_hub


def _url(tmp_path: Path, hub_db_url: str) -> str:
    return hub_db_url or f"sqlite:///{tmp_path / 'hub-data' / 'hub.db'}"


def _settings(tmp_path: Path, hub_db_url: str) -> HubSettings:
    return load_hub_settings(hub_env_for(tmp_path / "hub-data", hub_db_url, 0))


def _first_revision_tables() -> MetaData:
    """The tables of revision 0001: what the hub made before it had migrations."""
    path = schema_version.MIGRATIONS / "versions" / "r0001_initial.py"
    spec = importlib.util.spec_from_file_location("hub_r0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tables: MetaData = module.tables()
    return tables


def _pre_migration_hub(url: str) -> None:
    """A hub database as the code before migrations made it: create_all and some data."""
    if url.startswith("sqlite:///"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(engine_url(url))
    _first_revision_tables().create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO stores (id, region, name, token_hash, created_at) "
                          "VALUES ('s-1', 'north', 'Store 1', 'h1', 1.0)"))
        conn.execute(text("INSERT INTO changes (kind, ref, payload, created_ts, region) "
                          "VALUES ('campaign', 'cmp-1', '{}', 2.0, NULL)"))
    engine.dispose()


def test_the_migrations_make_exactly_the_schema_of_the_code(tmp_path: Path,
                                                             hub_db_url: str) -> None:
    db = HubDB(_url(tmp_path, hub_db_url))
    try:
        with db.read() as conn:
            v = version(conn)
            assert (v.state, v.current) == ("current", v.head)
            assert differences(conn, metadata) == []
    finally:
        db.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_data(tmp_path: Path,
                                                                     hub_db_url: str) -> None:
    settings = _settings(tmp_path, hub_db_url)
    _pre_migration_hub(settings.db_url)
    done = run_hub(settings, "migrate")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["was"], report["from"]) == ("unversioned", None)
    assert report["applied"][0] == "0001" and report["applied"][-1] == report["to"]
    engine = create_engine(engine_url(settings.db_url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, name FROM stores")).all() == [("s-1", "Store 1")]
            assert conn.execute(text("SELECT ref FROM changes")).scalars().all() == ["cmp-1"]
            assert version(conn).state == "current"
            assert differences(conn, metadata) == []
    finally:
        engine.dispose()
    again = run_hub(settings, "migrate")
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []
    assert "nothing to do" in again.stderr


def test_start_up_adopts_a_database_made_before_migrations(tmp_path: Path,
                                                           hub_db_url: str) -> None:
    settings = _settings(tmp_path, hub_db_url)
    _pre_migration_hub(settings.db_url)
    done = run_hub(settings, "stores", "list")
    assert done.returncode == 0, done.stderr
    assert [s["store"] for s in json.loads(done.stdout)] == ["s-1"]


def test_a_database_of_another_shape_is_left_alone_with_the_difference_named(
        tmp_path: Path, hub_db_url: str) -> None:
    url = _url(tmp_path, hub_db_url)
    Path(tmp_path / "hub-data").mkdir()
    engine = create_engine(engine_url(url))
    with engine.begin() as conn:  # payload of another type than the hub's
        conn.execute(text("CREATE TABLE customers (id VARCHAR(64) PRIMARY KEY, "
                          "record INTEGER NOT NULL, updated_ts FLOAT NOT NULL)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="differ from what this edge-hub expects.*customers"):
        HubDB(url)
    engine = create_engine(engine_url(url))
    try:
        assert inspect(engine).get_table_names() == ["customers"]  # all rolled back
    finally:
        engine.dispose()


def test_a_newer_database_is_refused_in_one_line(tmp_path: Path, hub_db_url: str) -> None:
    settings = _settings(tmp_path, hub_db_url)
    HubDB(settings.db_url).dispose()
    engine = create_engine(engine_url(settings.db_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    for args in (("stores", "list"), ("migrate",), ("serve",)):
        done = run_hub(settings, *args)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "revision 0999, which this edge-hub does not know" in lines[0]


LATER = '''"""A later revision, for the test.

Revision ID: 9002
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("note", sa.Text()))


def downgrade() -> None:
    raise NotImplementedError
'''


def test_an_older_revision_waits_for_migrate_then_opens(tmp_path: Path, hub_db_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url = _url(tmp_path, hub_db_url)
    HubDB(url).dispose()  # at this code's head
    head = schema_version.scripts().get_current_head()
    later = tmp_path / "migrations"
    shutil.copytree(schema_version.MIGRATIONS, later,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (later / "versions" / "r9002_test.py").write_text(LATER.replace("{head}", str(head)))
    monkeypatch.setattr(schema_version, "MIGRATIONS", later)
    with pytest.raises(SchemaError, match=f"at revision {head}, this edge-hub needs 9002: back"):
        HubDB(url)
    db = HubDB(url, check_schema=False)
    try:
        assert upgrade(db.engine) == {"from": head, "was": "older", "to": "9002",
                                      "applied": ["9002"]}
        assert "note" in {c["name"] for c in inspect(db.engine).get_columns("customers")}
    finally:
        db.dispose()
    HubDB(url).dispose()  # opens now


def test_a_hub_at_revision_0001_gets_the_products_table_from_migrate(
        tmp_path: Path, hub_db_url: str) -> None:
    settings = _settings(tmp_path, hub_db_url)
    _pre_migration_hub(settings.db_url)
    engine = create_engine(engine_url(settings.db_url))
    try:
        with engine.begin() as conn:  # adopted and stamped 0001, as a hub of that version did
            command.upgrade(schema_version._config(conn, None), "0001")
        assert "products" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    refused = run_hub(settings, "stores", "list")
    assert refused.returncode == 2 and "needs 0002" in refused.stderr
    done = run_hub(settings, "migrate")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["applied"] == ["0002"]
    products = tmp_path / "products.jsonl"
    products.write_text(json.dumps({"sku": "8000070", "name": "Coffee", "price": "7.99",
                                    "currency": "EUR"}) + "\n")
    imported = run_hub(settings, "products", "import", str(products))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == 1
    engine = create_engine(engine_url(settings.db_url))
    try:
        with engine.connect() as conn:
            assert differences(conn, metadata) == []
            assert conn.execute(text("SELECT ref FROM changes ORDER BY seq")).scalars().all() \
                == ["cmp-1", "EUR:8000070"]
    finally:
        engine.dispose()
