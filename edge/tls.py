"""The store's own certificate authority and the box's server certificate (cryptography).

Each store box has a CA of its own, made by `edge init`: a box in the wrong hands can
issue certificates that only its own devices trust, never another store's. The CA signs
one server certificate, which the broker's TLS listener (and the HTTPS proxy in front of the
staff pages) present; devices verify it with the CA file `tls/ca.crt`.

Files under EDGE_DATA_DIR/tls/ (the folder is 0700, the keys 0600):

    ca.crt      the CA certificate(s) devices trust: the newest first (give this to devices)
    ca.key      the newest CA's private key (never leaves the box)
    server.crt  the server certificate, then the CA that signed it
    server.key  its private key

Rotation (`edge tls rotate`) issues a new server key and certificate from the newest CA:
devices notice nothing. A new CA is staged (`edge tls rotate --ca`): it joins `ca.crt` beside
the current one while the server keeps its certificate, so devices can be given the
two-CA file first; the next `edge tls rotate` then signs with the new CA and drops the old.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.datadir import DataDir, write_private
from edge.settings import REPO_DEFAULTS, Settings
from store_contract.errors import StartupError

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
RENEW_DAYS = 30   # `edge init` / `edge broker` renew a server certificate this close to its end
ORGANISATION = "store edge"

Key = ec.EllipticCurvePrivateKey


def _key() -> Key:
    # P-256: what every TLS stack of a till, handheld or microcontroller speaks.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as AA:BB:..., what `openssl x509 -fingerprint -sha256` shows."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def default_names(broker_host: str = "") -> list[str]:
    """The names a device may use for this box: its host names, loopback and its LAN address."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    names += [host, f"{host}.local", socket.getfqdn()]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 9))  # no packet is sent: only picks the outgoing address
        names.append(s.getsockname()[0])
    if broker_host and broker_host not in ("0.0.0.0", "::"):
        names.append(broker_host)
    seen: dict[str, None] = {}
    for name in names:
        if name and name.lower() not in seen:
            seen[name.lower()] = None
    return list(seen)


def parse_names(text: str, broker_host: str = "") -> list[str]:
    """The `tls_names` setting (comma-separated) or, when empty, `default_names()`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or default_names(broker_host)


@dataclass(frozen=True)
class StoreTLS:
    """The TLS files of one data dir."""

    folder: Path

    @classmethod
    def of(cls, datadir: DataDir) -> StoreTLS:
        return cls(datadir.root / "tls")

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert_file(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key_file(self) -> Path:
        return self.folder / "server.key"

    def ready(self) -> bool:
        return all(p.exists() for p in (self.ca_file, self.cert_file, self.key_file))

    # ------------------------------------------------------------ making

    def ensure(self, store_id: str, names: list[str]) -> bool:
        """Create the CA and the server certificate where missing; True if anything was made."""
        made = False
        if not (self.ca_file.exists() and self.ca_key.exists()):
            self._write_ca(store_id, keep_old=False)
            made = True
        if made or not self._server_covers(names):
            self.issue_server(store_id, names)
            made = True
        return made

    def _server_covers(self, names: list[str]) -> bool:
        """Is there a server certificate for all these names, valid for 30 more days?"""
        if not (self.cert_file.exists() and self.key_file.exists()):
            return False
        server = self.server()
        if server.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_DAYS):
            return False
        have = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return all(_san(n) in have for n in names)

    def _prepare(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)

    def _write_ca(self, store_id: str, *, keep_old: bool) -> x509.Certificate:
        self._prepare()
        key = _key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME,
                               f"store {store_id} CA {_now():%Y-%m-%d %H%M%S}"),
        ])
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        old = self.cas() if keep_old else []
        write_private(self.ca_key, _key_pem(key), replace=True)
        self._write_public(self.ca_file, _cert_pem(cert, *old))
        return cert

    def _write_public(self, path: Path, text: str) -> None:
        write_private(path, text, replace=True)
        os.chmod(path, 0o644)  # a certificate is public; the folder still keeps others out

    def issue_server(self, store_id: str, names: list[str]) -> x509.Certificate:
        """A new server key and certificate from the newest CA; older CAs leave ca.crt."""
        if not names:
            raise ValueError("a server certificate needs at least one host name or address")
        ca_cert = self.cas()[0]
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = _key()
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"store {store_id} edge")]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS),
                                     ca_cert.not_valid_after_utc))
                .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        # Key first, then the certificate: a reader never pairs a new cert with an old key
        # for longer than the two renames.
        write_private(self.key_file, _key_pem(key), replace=True)
        self._write_public(self.cert_file, _cert_pem(cert, ca_cert))
        self._write_public(self.ca_file, _cert_pem(ca_cert))
        return cert

    def stage_ca(self, store_id: str) -> x509.Certificate:
        """A new CA beside the current one in ca.crt; the server certificate is unchanged."""
        return self._write_ca(store_id, keep_old=True)

    # ------------------------------------------------------------ reading

    def cas(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.ca_file.read_bytes())

    def server(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.cert_file.read_bytes())[0]

    def health(self, warn_days: int = RENEW_DAYS) -> dict[str, Any]:
        """For /healthz: the server certificate's end, and whether it is further off than
        `warn_days` (`edge broker` and `edge init` renew it inside that window)."""
        if not self.ready():
            return {"ok": False, "error": "no certificate: run edge init"}
        try:
            end = self.server().not_valid_after_utc
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": f"unreadable certificate ({type(exc).__name__})"}
        days = (end - _now()).days
        return {"ok": days >= warn_days, "not_after": end.isoformat(), "days_left": days}

    def describe(self) -> dict[str, Any]:
        """What `edge tls show` prints: files, names, validity and fingerprints."""
        if not self.ready():
            return {"tls": "missing", "folder": str(self.folder)}
        server = self.server()
        names = [str(n.value) for n in
                 server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
        return {
            "ca_file": str(self.ca_file), "cert_file": str(self.cert_file),
            "key_file": str(self.key_file),
            "cas": [{"subject": c.subject.rfc4514_string(), "sha256": fingerprint(c),
                     "not_after": c.not_valid_after_utc.isoformat()} for c in self.cas()],
            "server": {"names": names, "sha256": fingerprint(server),
                       "issuer": server.issuer.rfc4514_string(),
                       "not_after": server.not_valid_after_utc.isoformat()},
        }


def proxy_site(settings: Settings, https_port: int = 443, http_port: int = 80,
               address: str = "") -> str:
    """The nginx site (config/nginx/store-edge.conf.template) that serves the staff pages
    over HTTPS with the box's certificate; `edge tls proxy-config` prints it."""
    tls = StoreTLS.of(DataDir(settings.data_path))
    if not tls.ready():
        raise StartupError(f"no certificates in {tls.folder}: run `edge init` first")
    prefix = f"{address}:" if address else ""
    template = REPO_DEFAULTS.parent / "nginx" / "store-edge.conf.template"
    return template.read_text().format(
        http_listen=f"{prefix}{http_port}", https_listen=f"{prefix}{https_port}",
        https_suffix="" if https_port == 443 else f":{https_port}",
        cert=tls.cert_file, key=tls.key_file, body_limit=2 * settings.http_max_body_bytes,
        upstream=f"{settings.http_host}:{settings.http_port}")


def standalone_nginx(site: str, folder: Path) -> list[str]:
    """The command line of an nginx in the foreground serving only `site`, with its pid,
    logs and temp files in `folder` (for the demo and the tests; a store box runs Debian's
    nginx service with the site in /etc/nginx/sites-enabled)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.conf").write_text(site)
    conf = folder / "nginx.conf"
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""daemon off;
worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    include {folder}/site.conf;
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [nginx, "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")]
