"""The `edge` command as store IT uses it: stable JSON output, clear errors, live broker reload."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from edge.broker import BrokerProcess
from edge.settings import Settings
from pos_bridge.device import DeviceClient, DeviceError
from tests.conftest import EdgeProc, edge_cli, edge_env


def run_edge(settings: Settings, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*edge_cli(), *args], env=edge_env(settings), input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.process
def test_init_is_safe_to_run_again(settings: Settings) -> None:
    first = run_edge(settings, "init")
    assert first.returncode == 0, first.stderr
    body = json.loads(first.stdout)
    assert body["store"] == settings.store_id
    creds = (settings.data_path / "secrets" / "mqtt-edge.json").read_text()
    second = run_edge(settings, "init")
    assert second.returncode == 0
    assert (settings.data_path / "secrets" / "mqtt-edge.json").read_text() == creds
    assert (settings.data_path / "mosquitto" / "mosquitto.conf").exists()


def test_devices_add_prints_credentials_that_work_at_once_on_the_running_broker(
        settings: Settings, broker: BrokerProcess) -> None:
    done = run_edge(settings, "devices", "add", "scanner", "scanner-7")
    assert done.returncode == 0, done.stderr
    cred: dict[str, Any] = json.loads(done.stdout)
    assert set(cred) == {"kind", "id", "username", "password"}
    assert (cred["kind"], cred["id"], cred["username"]) == ("scanner", "scanner-7",
                                                            "scanner-scanner-7")
    # No broker restart: `devices add` made it reload its password file and ACL.
    client = DeviceClient(settings.store_id, "scanner", "scanner-7", settings.mqtt_url,
                          cred["username"], cred["password"]).connect(timeout=5)
    client.close()
    listed = json.loads(run_edge(settings, "devices", "list").stdout)
    assert [(d["kind"], d["id"]) for d in listed] == [("scanner", "scanner-7")]


def test_removed_device_can_no_longer_log_in(settings: Settings, broker: BrokerProcess) -> None:
    cred = json.loads(run_edge(settings, "devices", "add", "kiosk", "kiosk-1").stdout)
    removed = run_edge(settings, "devices", "remove", "kiosk", "kiosk-1")
    assert removed.returncode == 0 and json.loads(removed.stdout)["removed"] is True
    client = DeviceClient(settings.store_id, "kiosk", "kiosk-1", settings.mqtt_url,
                          cred["username"], cred["password"])
    with pytest.raises(DeviceError, match="refused"):
        client.connect(timeout=5)


@pytest.mark.parametrize(("args", "words"), [
    (("devices", "add", "fridge", "f1"), "Unknown device kind 'fridge'"),
    (("devices", "add", "pos", "Lane 1"), "must be 1-32 characters"),
    (("devices", "remove", "pos", "ghost"), "No pos device 'ghost'"),
    (("printers", "add", "p1", "--lane", "lane-1", "--profile", "TM-T88X"),
     "Unknown printer profile 'TM-T88X' (did you mean TM-T88V"),
    (("printers", "add", "p1", "--lane", "lane-1", "--connect", "lpt://printer"), "lpt"),
    (("printers", "add", "p1", "--lane", "Lane 1"), "Lane ids are 1-32"),
    (("printers", "remove", "ghost"), "No printer 'ghost'"),
])
@pytest.mark.process
def test_bad_device_commands_fail_with_one_clear_line(settings: Settings, args: tuple[str, ...],
                                                      words: str) -> None:
    done = run_edge(settings, *args)
    assert done.returncode == 1
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


@pytest.mark.process
def test_enrolling_twice_needs_rotate(settings: Settings) -> None:
    first = json.loads(run_edge(settings, "devices", "add", "pos", "lane-1").stdout)
    again = run_edge(settings, "devices", "add", "pos", "lane-1")
    assert again.returncode == 1 and "--rotate" in again.stderr
    rotated = json.loads(run_edge(settings, "devices", "add", "pos", "lane-1", "--rotate").stdout)
    assert rotated["password"] != first["password"]


@pytest.mark.process
def test_staff_add_reads_the_password_from_stdin(settings: Settings) -> None:
    done = run_edge(settings, "staff", "add", "mia", "--role", "manager", "--password-stdin",
                    stdin="a-long-password\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"username": "mia", "role": "manager"}
    short = run_edge(settings, "staff", "add", "bob", "--role", "cashier", "--password-stdin",
                     stdin="short\n")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr


def test_a_second_edge_on_a_taken_port_stops_without_pushing_the_first_off_the_bus(
        settings: Settings, edge_process: EdgeProc) -> None:
    import requests

    from tests.conftest import wait_until

    url = f"http://127.0.0.1:{edge_process.http_port}/healthz"
    assert wait_until(lambda: requests.get(url, timeout=2).json()["broker"]["connected"], 15)
    connects = requests.get(f"http://127.0.0.1:{edge_process.http_port}/metrics", timeout=2).text
    second = run_edge(settings.with_overrides(http_port=edge_process.http_port), "serve")
    assert second.returncode == 2
    assert "is another edge running?" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    after = requests.get(f"http://127.0.0.1:{edge_process.http_port}/metrics", timeout=2).text
    line = [ln for ln in connects.splitlines() if ln.startswith("edge_bus_connects_total")]
    assert line and line[0] in after, "the running edge was pushed off the broker"
    assert requests.get(url, timeout=2).json()["broker"]["connected"] is True


def test_broker_refuses_to_start_on_a_taken_port(settings: Settings,
                                                 broker: BrokerProcess) -> None:
    from store_contract.errors import StartupError

    with pytest.raises(StartupError, match="already taken"):
        BrokerProcess(settings, broker.datadir, quiet=True).start()


def test_a_stale_pid_file_never_signals_another_program(settings: Settings) -> None:
    import os

    from edge.broker import reload_broker
    from edge.datadir import DataDir

    datadir = DataDir(settings.data_path).ensure()
    (datadir.mosquitto / "mosquitto.pid").write_text(f"{os.getpid()}\n")  # pytest, not mosquitto
    assert reload_broker(datadir) is False


@pytest.mark.process
def test_products_import_csv_and_json_lines_upserts_and_names_bad_rows(
        settings: Settings, tmp_path: Any) -> None:
    from edge.products import find_product, known_categories
    from edge.store import Store

    first = tmp_path / "products.csv"
    first.write_text("sku,name,price,categories\n"
                     "8000070,Coffee beans 500 g,7.99,coffee;pantry\n"
                     "5000169,Milk 1 l,\"1,49\",dairy\n"
                     "bad sku,Thing,1.00,\n"
                     "4000001,Apples,abc,fruit\n"
                     "4000002,Pears,-1,fruit\n"
                     "4000003,Plums,1.999,fruit\n")
    done = run_edge(settings, "products", "import", str(first))
    assert done.returncode == 1  # some rows skipped; the good ones are in
    report = json.loads(done.stdout)
    assert (report["imported"], report["skipped"]) == (2, 4)
    assert [p["line"] for p in report["problems"]] == [4, 5, 6, 7]
    errors = done.stderr.splitlines()
    assert "line 5: skipped: price 'abc' is not an amount like 2.49" in errors
    assert "line 7: skipped: price '1.999' has more than 2 decimal places" in errors
    # JSON Lines, and the same code again: replaced, not doubled.
    second = tmp_path / "products.jsonl"
    second.write_text(json.dumps({"sku": "8000070", "name": "Coffee beans 1 kg",
                                  "unit_minor": 1499, "categories": ["coffee"]}) + "\n")
    done = run_edge(settings, "products", "import", str(second))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"imported": 1, "skipped": 0, "problems": []}
    again = run_edge(settings, "products", "import", str(second))
    assert again.returncode == 0
    store = Store(settings.data_path / "edge.db")
    try:
        coffee = find_product(store, "8000070")
        assert coffee is not None and (coffee.name, coffee.unit_minor) == ("Coffee beans 1 kg",
                                                                           1499)
        assert store.query_one("SELECT COUNT(*) AS n FROM products")["n"] == 2  # type: ignore[index]
        assert known_categories(store) == ["coffee", "dairy"]
    finally:
        store.close()
    header = tmp_path / "wrong.csv"
    header.write_text("code,title\n1,x\n")
    done = run_edge(settings, "products", "import", str(header))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "edge: " + str(header) + ": the first line of a CSV file must name its columns")
