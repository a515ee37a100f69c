"""TLS and node-key provisioning for a federation (`tre federation provision`).

Creates, in one folder:

* `ca.crt` / `ca.key` — the federation's own certificate authority (EC P-384);
* `superlink.crt` / `superlink.key` — the SuperLink's server certificate, signed by
  the CA, with SANs for loopback (127.0.0.1, ::1, localhost) and any given hosts;
* `portal.crt` / `portal.key` — the portal's server certificate, the same way for the
  portal's hosts: nodes and the SuperLink check the portal against the CA;
* `pseudonymiser.crt` / `pseudonymiser.key` — the pseudonymisation service's, the same
  way: nodes and stewards check it against the CA before they send a blinded value;
* `hospitals/<id>/flower-node-key{,.pub}` — one SuperNode key pair per hospital
  (OpenSSH, P-384: what `flower-supernode --auth-supernode-private-key` and
  `flwr supernode register` take).

Why our own CA: SuperNodes must verify that they talk to the federation's
SuperLink (`--root-certificates ca.crt`) without trusting any public CA, and the
node keys are what the SuperLink's allowlist (`--enable-supernode-auth`) admits.
Private keys are written 0600. Existing files are kept unless `force`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.node.enrol import PUB_FILE, generate_key_pair
from federation.node.home import write_private

VALID_DAYS = 825


@dataclass(frozen=True)
class Provisioned:
    folder: Path
    ca_cert: Path
    superlink_cert: Path
    superlink_key: Path
    portal_cert: Path
    portal_key: Path
    node_keys: dict[str, Path]  # hospital -> private key file
    pseudonymiser_cert: Path
    pseudonymiser_key: Path


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TRE federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(["127.0.0.1", "::1", "localhost", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _server_certificate(out: Path, name: str, cn: str, hosts: list[str], ca_cert: x509.Certificate,
                        ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime, force: bool
                        ) -> tuple[Path, Path]:
    """`<name>.crt` / `<name>.key`: a TLS server certificate signed by the CA."""
    crt, key_path = out / f"{name}.crt", out / f"{name}.key"
    if force or not crt.exists():
        key = ec.generate_private_key(ec.SECP384R1())
        cert = (x509.CertificateBuilder().subject_name(_name(cn))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                .add_extension(_san(hosts), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA384()))
        write_private(key_path, _key_bytes(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def provision(folder: str | Path, hospitals: list[str], *, hosts: list[str] | None = None,
              portal_hosts: list[str] | None = None,
              pseudonymiser_hosts: list[str] | None = None, force: bool = False) -> Provisioned:
    """Write CA, SuperLink, portal and pseudonymiser certificates and per-hospital node
    keys into `folder` (`hosts`: the SuperLink's names or IPs, `portal_hosts`: the
    portal's, `pseudonymiser_hosts`: the pseudonymisation service's)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_crt, ca_key_path = out / "ca.crt", out / "ca.key"
    if force or not ca_crt.exists():
        ca_key = ec.generate_private_key(ec.SECP384R1())
        ca = (x509.CertificateBuilder().subject_name(_name("TRE federation CA"))
              .issuer_name(_name("TRE federation CA")).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA384()))
        write_private(ca_key_path, _key_bytes(ca_key))
        ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        force = True  # a new CA invalidates the old server certificate
    ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    sl_crt, sl_key = _server_certificate(out, "superlink", "TRE SuperLink", hosts or [],
                                         ca_cert, ca_key, now, force)
    portal_crt, portal_key = _server_certificate(out, "portal", "TRE portal", portal_hosts or [],
                                                 ca_cert, ca_key, now, force)
    pseudo_crt, pseudo_key = _server_certificate(
        out, "pseudonymiser", "TRE pseudonymisation service", pseudonymiser_hosts or [],
        ca_cert, ca_key, now, force)
    node_keys: dict[str, Path] = {}
    for hospital in hospitals:
        d = out / "hospitals" / hospital
        d.mkdir(parents=True, exist_ok=True)
        priv = d / "flower-node-key"
        if force or not priv.exists():
            private, public = generate_key_pair()
            write_private(priv, private)
            (d / PUB_FILE).write_bytes(public)
        node_keys[hospital] = priv
    return Provisioned(out, ca_crt, sl_crt, sl_key, portal_crt, portal_key, node_keys,
                       pseudo_crt, pseudo_key)
