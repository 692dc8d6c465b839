"""The README's "Deploying on a store box", run as the store's IT person runs it (minus systemd).

The blocks marked `<!-- deploy-test -->` in README.md are run in order, as root, by one bash,
in a scratch root: the real paths (/opt/store-edge, /etc/store-edge, /var/lib/store-edge,
/usr/local/bin, /etc/nginx/sites-enabled, /etc/systemd/system) are moved under a temporary
folder and the `store-edge` user is a throw-away user of this run. Every command must exit 0,
and a `# {...}` line under a command is the JSON it must print ("..." stands for any value).
Three lines have stand-ins, listed in STAND_INS (the test fails if the README no longer has
them): the clone and the virtual environment are this checkout and its `.venv` (made the same
way by scripts/setup.sh), and apt-get runs only when a package is missing. `systemctl` lines
are left out; the broker is then started the way its unit starts it, through the wrapper.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
MARK = "<!-- deploy-test -->"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None,
    reason="the deploy runs as root on Debian (useradd, runuser)")


def _system_python_matches() -> bool:
    try:
        version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return version == str(sys.version_info[:2])

DEV_SITE = sysconfig.get_path("purelib")  # this checkout's installed dependencies
SYSTEM_PYTHON = "/usr/bin/python3"
STAND_INS = {
    # this working tree (committed or not), as the clone would be
    "git clone <this repository> /opt/store-edge && cd /opt/store-edge":
        f"mkdir /opt/store-edge && tar -C {ROOT} --exclude=./.venv --exclude=./.git -cf - . "
        "| tar -C /opt/store-edge -xf - && cd /opt/store-edge",
    # a real venv of Debian's python3; the packages pip would fetch are this checkout's
    "python3 -m venv .venv && .venv/bin/pip install -e '.[edge]'":
        "python3 -m venv --without-pip .venv && "
        f"echo \"import site; site.addsitedir('{DEV_SITE}')\" "
        "> $(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))')"
        "/store-edge-deploy-test.pth && printf '#!%s/.venv/bin/python\\nfrom edge.app.cli import "
        "main\\nmain()\\n' \"$PWD\" > .venv/bin/edge && chmod 0755 .venv/bin/edge",
}
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian root's
PASSWORD = "Correct-horse-battery-9"
STDIN = {"edge staff add anna --role manager": f"{PASSWORD}\n{PASSWORD}\n"}


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)


def deploy_blocks(text: str) -> list[str]:
    return re.findall(re.escape(MARK) + r"\n```(?:bash|sh)\n(.*?)```", text, re.S)


def commands(block: str) -> list[Command]:
    """Shell commands (continuation lines and here-documents joined) with the JSON lines
    the docs show under them."""
    out: list[Command] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if line.startswith("#"):
            if line[1:].strip()[:1] in "{[" and out:
                out[-1].expected.append(line[1:].strip())
            continue
        text = [line]
        while text[-1].endswith("\\"):
            text.append(lines[i])
            i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            while lines[i].strip() != heredoc.group(1):
                text.append(lines[i])
                i += 1
            text.append(lines[i])
            i += 1
        out.append(Command("\n".join(text)))
    return out


def matches(expected: Any, got: Any) -> bool:
    if expected in ("...", "…"):
        return True
    if isinstance(expected, dict):
        return (isinstance(got, dict) and expected.keys() == got.keys()
                and all(matches(v, got[k]) for k, v in expected.items()))
    if isinstance(expected, list):
        return (isinstance(got, list) and len(expected) == len(got)
                and all(matches(e, g) for e, g in zip(expected, got, strict=True)))
    return bool(expected == got)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_packages(command: str) -> list[str]:
    names = command.split("apt-get install -y", 1)[1].split()
    return [n for n in names if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", n], capture_output=True, text=True
    ).stdout != "install ok installed"]


def user_uid(user: str) -> int:
    return int(subprocess.run(["id", "-u", user], capture_output=True, text=True,
                              check=True).stdout)


@dataclass
class Scratch:
    root: Path
    user: str
    mqtt_port: int
    tls_port: int

    def path(self, real: str) -> Path:
        return self.root / real.lstrip("/")

    def localise(self, text: str) -> str:
        """The docs' text with the real paths, user and ports of this scratch root."""
        for real in ("/opt/store-edge", "/etc/store-edge", "/var/lib/store-edge",
                     "/usr/local/bin", "/etc/nginx/sites-enabled", "/etc/systemd/system"):
            text = re.sub(re.escape(real) + r"(?![\w-])", str(self.path(real)), text)
        text = re.sub(r"(?<![\w/.:-])store-edge(?![\w/.-])", self.user, text)
        text = text.replace(":1883", f":{self.mqtt_port}")
        return text.replace("EDGE_BROKER_HOST=0.0.0.0",
                            f"EDGE_BROKER_HOST=127.0.0.1\nEDGE_BROKER_TLS_PORT={self.tls_port}")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env.update(PATH=f"{self.path('/usr/local/bin')}:{ROOT_PATH}",
                   STORE_EDGE_DIR=str(self.path("/opt/store-edge")),
                   STORE_EDGE_ENV_FILE=str(self.path("/etc/store-edge/edge.env")),
                   STORE_EDGE_USER=self.user,
                   EDGE_LOG_LEVEL="DEBUG")  # not in the file: the wrapper must not pass it on
        return env


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    root = Path(tempfile.mkdtemp(prefix="deploy-"))
    root.chmod(0o755)  # the service user walks through it, as through / on a real box
    for real in ("/opt", "/etc/nginx/sites-enabled", "/etc/systemd/system", "/var/lib",
                 "/usr/local/bin"):
        (root / real.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "etc/nginx/sites-enabled/default").write_text("# Debian's default site\n")
    user = f"sedt{os.getpid() % 100000}"
    try:
        yield Scratch(root, user, free_port(), free_port())
    finally:
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def run_blocks(scratch: Scratch, blocks: list[list[Command]]) -> list[tuple[Command, str]]:
    """Runs every command in one bash (so `cd` carries on), each with its stdout and stderr
    in files; stops at the first that fails. Returns the commands run with their stdout."""
    work = scratch.root / "run"
    work.mkdir()
    script = ["cd /root 2>/dev/null || cd /"]
    plan: list[Command] = []
    for block in blocks:
        for cmd in block:
            text = cmd.text
            if text.startswith("systemctl"):
                continue
            if text.startswith("apt-get") and not missing_packages(text):
                continue
            text = STAND_INS.get(text, text)
            n = len(plan)
            plan.append(cmd)
            (work / f"in{n}").write_text(STDIN.get(text.split("#")[0].strip(), ""))
            script.append(f"{{ {scratch.localise(text)}\n}} <{work}/in{n} >{work}/out{n} "
                          f"2>{work}/err{n}; rc=$?; echo $rc >{work}/rc{n}; "
                          f"[ $rc -eq 0 ] || exit 0")
    (work / "deploy.sh").write_text("\n".join(script) + "\n")
    subprocess.run(["bash", str(work / "deploy.sh")], env=scratch.env(), timeout=120,
                   start_new_session=True, check=True)  # no terminal: prompts read stdin
    done = []
    for n, cmd in enumerate(plan):
        rc_file = work / f"rc{n}"
        assert rc_file.exists(), f"not run (an earlier command failed): {cmd.text}"
        out, err = (work / f"out{n}").read_text(), (work / f"err{n}").read_text()
        assert rc_file.read_text().strip() == "0", (
            f"{cmd.text!r} exited {rc_file.read_text().strip()}:\n{err}{out}")
        for want in cmd.expected:
            expected = json.loads(scratch.localise(want))
            got = [json.loads(line) for line in out.splitlines() if line[:1] in "{["]
            assert any(matches(expected, g) for g in got), (
                f"{cmd.text!r} printed\n{out}\nnot what the docs show:\n{want}")
        done.append((cmd, out))
    return done


def _readable_by_all(path: Path) -> bool:
    """The service user reads this checkout's packages: every folder above must let it in."""
    return all(p.stat().st_mode & 0o005 == 0o005 for p in [path, *path.parents])


@pytest.mark.skipif(not _readable_by_all(Path(DEV_SITE)),
                    reason=f"{DEV_SITE} is not readable by other users")
@pytest.mark.skipif(not _system_python_matches(),
                    reason=f"{SYSTEM_PYTHON} is not this Python's version (shared packages)")
@pytest.mark.process
def test_the_readmes_deploy_blocks_run_as_documented(scratch: Scratch) -> None:
    text = README.read_text()
    for line in STAND_INS:
        assert line in text, f"the README no longer has {line!r}: update STAND_INS"
    blocks = [commands(b) for b in deploy_blocks(text)]
    assert len(blocks) >= 3, "the install, device and printer blocks are marked"
    done = run_blocks(scratch, blocks)
    assert [c.text.split("#")[0].split()[:3] for c, _ in done if c.text.startswith("edge ")] == [
        ["edge", "init"], ["edge", "staff", "add"], ["edge", "tls", "proxy-config"],
        ["edge", "devices", "add"], ["edge", "printers", "add"]]

    # The settings file: root:store-edge 0640, as the docs say everywhere.
    env_file = scratch.path("/etc/store-edge/edge.env")
    st = env_file.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, 0)
    assert st.st_gid == int(subprocess.run(["id", "-g", scratch.user], capture_output=True,
                                           text=True, check=True).stdout)
    # nginx's site came from `edge tls proxy-config`; Debian's default site is gone.
    site = scratch.path("/etc/nginx/sites-enabled/store-edge").read_text()
    assert "ssl_certificate" in site and str(scratch.path("/var/lib/store-edge")) in site
    assert not scratch.path("/etc/nginx/sites-enabled/default").exists()
    main = scratch.root / "nginx.conf"  # the site as Debian's nginx.conf includes it
    main.write_text(f"pid {scratch.root}/nginx.pid;\nerror_log {scratch.root}/nginx.log;\n"
                    "events {}\nhttp { include " + str(scratch.path(
                        "/etc/nginx/sites-enabled")) + "/*; }\n")
    checked = subprocess.run(["nginx", "-t", "-c", str(main)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # The data dir, the service user's home, is kept private by the edge.
    data = scratch.path("/var/lib/store-edge").stat()
    assert (stat.S_IMODE(data.st_mode), data.st_uid) == (0o700, user_uid(scratch.user))
    # The broker and the edge, and the scanner service's template (enabled per scanner
    # device, docs/scanners.md).
    assert sorted(p.name for p in scratch.path("/etc/systemd/system").iterdir()) == [
        "store-edge-broker.service", "store-edge.service", "store-scanner@.service"]

    # What the wrapper hands the edge: the file's settings (a quoted value with spaces
    # intact), none of the caller's. The real settings loader reads them.
    probe = ("import json, os; from edge.settings import load_settings; s = load_settings(); "
             "print(json.dumps({'env': sorted(k for k in os.environ if k.startswith('EDGE_')),"
             " 'user': os.getuid(), 'cwd': os.getcwd(), 'name': s.store_name,"
             " 'address': s.store_address, 'survey': s.survey_url, 'store': s.store_id}))")
    fake = scratch.root / "probe"
    (fake / ".venv/bin").mkdir(parents=True)
    (fake / ".venv/bin/edge").write_text(
        f"#!/bin/sh\nexec {scratch.path('/opt/store-edge')}/.venv/bin/python -c \"$1\"\n")
    (fake / ".venv/bin/edge").chmod(0o755)
    wrapper = scratch.path("/usr/local/bin/edge")
    seen = json.loads(subprocess.run(
        [str(wrapper), probe], env={**scratch.env(), "STORE_EDGE_DIR": str(fake)},
        capture_output=True, text=True, check=True).stdout)
    written = re.findall(r"^(EDGE_\w+)=", env_file.read_text(), re.M)
    assert seen == {"env": sorted(written), "cwd": str(fake),
                    "user": user_uid(scratch.user),
                    "name": "Harbour Street",
                    "address": "Harbour Street 4 | 20457 Hamburg | Tel. 040 1234567",
                    "survey": "", "store": "store-12"}

    # The broker as its unit runs it: `edge broker` as the service user with the settings
    # file, its output not a terminal; Mosquitto's log must show up at once, not at exit.
    log = scratch.root / "broker.log"
    with log.open("wb") as sink:
        broker = subprocess.Popen([str(wrapper), "broker"], env=scratch.env(), stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # the device listener (TLS) of the rendered config
            assert broker.poll() is None, f"the broker stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the broker does not listen:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", scratch.tls_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        # Our probe (it spoke no TLS), in the log while the broker runs: a buffered log shows
        # only at exit. Mosquitto words the failed handshake in one of two ways, depending on
        # when the probe's close reaches it.
        probe = re.compile(r"Client connection from 127\.0\.0\.1 failed"
                           r"|OpenSSL Error\[\d+\]: error:\w+:SSL routines")
        deadline = time.monotonic() + 10
        while not probe.search(log.read_text()):
            assert time.monotonic() < deadline, (
                f"our probe is not in the broker's log while it runs:\n{log.read_text()}")
            time.sleep(0.1)

        # operations.md §14.1's port check (no nc on a fresh Debian), against a port that
        # answers (the broker's) and one that does not.
        ops = OPERATIONS.read_text()
        check = re.search(r"```sh\n(timeout 3 bash -c .*)\n```", ops)
        assert check, "§14.1 shows the port check"
        for port, said in ((scratch.tls_port, "open"), (free_port(), "closed")):
            line = check.group(1).replace("10.0.0.21/9100", f"127.0.0.1/{port}")
            assert subprocess.run(["bash", "-c", line], capture_output=True, text=True,
                                  check=True).stdout.strip() == said
    finally:
        os.killpg(broker.pid, signal.SIGTERM)
        broker.wait(15)

    # A settings file the service user cannot read is named, not a shell error.
    env_file.chmod(0o600)
    refused = subprocess.run([str(wrapper), "devices", "list"], env=scratch.env(),
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"edge: {env_file} is not readable by {scratch.user}; "
                                     f"it must be root:{scratch.user}, mode 0640")


def test_the_install_in_operations_is_the_readmes() -> None:
    """operations.md §2 explains the README's install; its commands must be the same ones."""
    ops = OPERATIONS.read_text()
    section = ops[ops.index("## 2. Install"):ops.index("## 3. The systemd units")]
    readme = {c.text for b in deploy_blocks(README.read_text()) for c in commands(b)}
    theirs = [c.text for b in re.findall(r"```(?:sh|bash)\n(.*?)```", section, re.S)
              for c in commands(b)]
    assert theirs and [t for t in theirs if t not in readme] == []


def test_no_doc_runs_edge_around_the_wrapper() -> None:
    """One admin command everywhere: no sudo (a fresh Debian has none), no `env $(cat ...)`."""
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for bad in ("sudo -u", "env $(cat /", "/etc/store-edge/env "):
            assert bad not in text, f"{doc.name} still has {bad!r}"


@pytest.mark.process
def test_the_hub_admin_command_reads_its_settings_file(tmp_path: Path) -> None:
    """config/bin/edge-hub (docs/hub.md, "Deploying the hub"): the settings of
    /etc/edge-hub.env, quoted values with spaces intact, none of the caller's. Run here as
    its own user (root), so this checkout's .venv serves as /opt/store-edge's."""
    env_file = tmp_path / "edge-hub.env"
    env_file.write_text(f"HUB_DATA_DIR={tmp_path}/data\n# the dashboard's days\n"
                        'HUB_TZ="Europe/Berlin"\n')
    env_file.chmod(0o640)
    env = {**os.environ, "EDGE_HUB_DIR": str(ROOT), "EDGE_HUB_ENV_FILE": str(env_file),
           "EDGE_HUB_USER": "root", "HUB_DATA_DIR": str(tmp_path / "not-this-one")}
    hub = [str(ROOT / "config/bin/edge-hub")]
    added = subprocess.run([*hub, "stores", "add", "store-12", "--region", "north", "--name",
                            "Harbour Street"], env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["store"] == "store-12"
    assert (tmp_path / "data").is_dir() and not (tmp_path / "not-this-one").exists()
    listed = subprocess.run([*hub, "stores", "list"], env=env, capture_output=True, text=True,
                            check=True)
    assert "Harbour Street" in listed.stdout
    gone = subprocess.run([*hub, "stores", "list"], capture_output=True, text=True,
                          env={**env, "EDGE_HUB_USER": "no-such-user-here"})
    assert (gone.returncode, gone.stderr.split(";")[0]) == (
        2, "edge-hub: there is no user no-such-user-here")


def _unit(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def _defaults(wrapper: Path) -> dict[str, str]:
    found = re.findall(r"^(dir|env_file|user)=\$\{\w+:-(.*)\}$", wrapper.read_text(), re.M)
    return dict(found)


@pytest.mark.process
def test_the_units_and_the_admin_commands_agree() -> None:
    """The admin command runs as the units' user, in their folder, with their settings file
    (required, so a missing file stops them instead of starting a store with defaults)."""
    edge = _defaults(ROOT / "config/bin/edge")
    for name in ("store-edge.service", "store-edge-broker.service"):
        unit = _unit((ROOT / "config/systemd" / name).read_text())
        assert (unit["User"], unit["Group"], unit["WorkingDirectory"], unit["EnvironmentFile"]
                ) == (edge["user"], edge["user"], edge["dir"], edge["env_file"])
        assert unit["ExecStart"].startswith(f"{edge['dir']}/.venv/bin/edge ")
    hub_doc = (ROOT / "docs/hub.md").read_text()
    hub_unit = _unit(re.findall(r"```ini\n(.*?)```", hub_doc, re.S)[-1])
    hub = _defaults(ROOT / "config/bin/edge-hub")
    assert (hub_unit["User"], hub_unit["WorkingDirectory"], hub_unit["EnvironmentFile"]) == (
        hub["user"], hub["dir"], hub["env_file"])
    assert hub_unit["ExecStart"] == f"{hub['dir']}/.venv/bin/edge-hub serve"
    assert f"--shell /usr/sbin/nologin {hub['user']}" in hub_doc  # the user is made
