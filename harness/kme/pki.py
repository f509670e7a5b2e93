"""A local PKI for qiot: one CA and per-entity certificates (ECDSA P-256), created idempotently.

Folder layout (``pki_dir``)::

    ca.crt, ca.key                    the CA (self-signed); ca.key never leaves this folder
    kme/<kme_id>.crt, .key            KMEs: serverAuth+clientAuth, SAN DNS = kme_id, IPs given
    sae/<sae_id>.crt, .key            SAEs (IoT platform, gateway, each device): clientAuth
    relay/<name>.crt, .key            the gateway relay that serves devices: serverAuth, SAN DNS = name
    psk/<device_id>.psk               32 random bytes per device, for the ``psk_wrap`` wireless hop

Identity convention: the entity id is the certificate subject CN and the role is the subject OU
(``KME``, ``SAE`` or ``RELAY``). A KME takes the caller's SAE ID from the CN of a client
certificate with OU=SAE; KME-to-KME calls need OU=KME. Clients check a server by its id through
the TLS hostname check (``server_hostname=<id>`` against the SAN DNS name), so addresses can change.
Keys are written with mode 0600. Randomness comes from the OS (cryptography keys cannot be seeded).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("KME", "SAE", "RELAY")
_FOLDER = {"KME": "kme", "SAE": "sae", "RELAY": "relay"}
#: Entity ids double as DNS names in SANs and as file names: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
PSK_BYTES = 32  # AES-256 key-encryption key for the psk_wrap transport
CERT_DAYS = 3650  # assumption: a testbed PKI; validity long enough never to expire mid-study


class PkiError(ValueError):
    """Bad entity id, unknown role, or a PKI folder that is inconsistent (e.g. a foreign CA)."""


@dataclass(frozen=True)
class Entity:
    """Paths of one entity's certificate and private key, and the CA that signed them."""

    entity_id: str
    role: str
    cert: Path
    key: Path
    ca: Path


def check_id(entity_id: str, what: str = "entity id") -> str:
    """Return ``entity_id`` if it is usable as CN, DNS name and file name; raise :class:`PkiError`."""
    if not isinstance(entity_id, str) or not ID_PATTERN.match(entity_id):
        raise PkiError(f"{what} {entity_id!r} must match {ID_PATTERN.pattern}")
    return entity_id


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """The CA of one PKI folder; loads it if present, creates it otherwise."""

    def __init__(self, pki_dir: str | os.PathLike[str]):
        self.dir = Path(pki_dir)
        self.cert_path = self.dir / "ca.crt"
        self.key_path = self.dir / "ca.key"
        if self.cert_path.exists() and self.key_path.exists():
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            self.key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        else:
            self._create()

    def _create(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qiot"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"qiot CA {secrets.token_hex(4)}")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=5))
                     .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))
        _write_private(self.key_path, _key_pem(self.key))
        _write_public(self.cert_path, self.cert.public_bytes(serialization.Encoding.PEM))

    def issued(self, cert: x509.Certificate) -> bool:
        """True if ``cert`` carries this CA's signature."""
        try:
            cert.verify_directly_issued_by(self.cert)
            return True
        except (ValueError, TypeError, InvalidSignature):
            return False

    def ensure(self, entity_id: str, role: str, ip_addresses: tuple[str, ...] = ()) -> Entity:
        """Return the entity's files, issuing a certificate unless a valid one from this CA exists.

        An existing certificate is kept if this CA signed it, its CN/OU match and it already names
        every requested IP address; otherwise a new key and certificate replace it.
        """
        check_id(entity_id)
        if role not in ROLES:
            raise PkiError(f"role {role!r} must be one of {', '.join(ROLES)}")
        try:
            ips = [ipaddress.ip_address(a) for a in ip_addresses]
        except ValueError as exc:
            raise PkiError(f"ip address: {exc}") from None
        cert_path = self.dir / _FOLDER[role] / f"{entity_id}.crt"
        key_path = cert_path.with_suffix(".key")
        entity = Entity(entity_id, role, cert_path, key_path, self.cert_path)
        if cert_path.exists() and key_path.exists() and self._still_valid(cert_path, entity_id, role, ips):
            return entity
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qiot"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                             x509.NameAttribute(NameOID.COMMON_NAME, entity_id)])
        usages = {"KME": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                  "SAE": [ExtendedKeyUsageOID.CLIENT_AUTH],
                  "RELAY": [ExtendedKeyUsageOID.SERVER_AUTH]}[role]
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if role != "SAE":
            sans: list[x509.GeneralName] = [x509.DNSName(entity_id)]
            sans += [x509.IPAddress(ip) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return entity

    def _still_valid(self, cert_path: Path, entity_id: str, role: str, ips: list) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError:
            return False
        if not self.issued(cert):
            return False
        if identity_of(cert) != (entity_id, role):
            return False
        if ips:
            try:
                have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                return False
            if not set(ips) <= set(have.get_values_for_type(x509.IPAddress)):
                return False
        return True

    def ensure_psk(self, device_id: str) -> Path:
        """Return the path of the device's pre-shared key, creating 32 random bytes if absent."""
        check_id(device_id, "device id")
        path = self.dir / "psk" / f"{device_id}.psk"
        if not path.exists() or len(path.read_bytes()) != PSK_BYTES:
            _write_private(path, secrets.token_bytes(PSK_BYTES))
        return path


def identity_of(cert: x509.Certificate) -> tuple[str, str]:
    """Return (CN, OU) of a certificate subject; empty strings where absent."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return (str(cn[0].value) if cn else "", str(ou[0].value) if ou else "")


@dataclass(frozen=True)
class DeviceCredentials:
    """What provisioning gives one device: its SAE certificate and key, the CA, and its PSK."""

    device_id: str
    cert: Path
    key: Path
    ca: Path
    psk: bytes


def provision_device(pki_dir: str | os.PathLike[str], device_id: str) -> DeviceCredentials:
    """Create (or reuse) a device's SAE certificate and PSK and return its credentials."""
    ca = CertificateAuthority(pki_dir)
    entity = ca.ensure(device_id, "SAE")
    psk_path = ca.ensure_psk(device_id)
    return DeviceCredentials(device_id, entity.cert, entity.key, entity.ca, psk_path.read_bytes())


def load_psk(pki_dir: str | os.PathLike[str], device_id: str) -> bytes:
    """A device's provisioned PSK; raise :class:`PkiError` if provisioning has not made it."""
    check_id(device_id, "device id")
    path = Path(pki_dir) / "psk" / f"{device_id}.psk"
    try:
        psk = path.read_bytes()
    except OSError:
        raise PkiError(f"{path}: missing (provision the device first)") from None
    if len(psk) != PSK_BYTES:
        raise PkiError(f"{path}: must hold {PSK_BYTES} bytes, has {len(psk)}")
    return psk


def entity_paths(pki_dir: str | os.PathLike[str], entity_id: str, role: str) -> Entity:
    """Paths of an existing entity; raise :class:`PkiError` naming the missing file otherwise."""
    check_id(entity_id)
    base = Path(pki_dir)
    cert = base / _FOLDER[role] / f"{entity_id}.crt"
    entity = Entity(entity_id, role, cert, cert.with_suffix(".key"), base / "ca.crt")
    for path in (entity.cert, entity.key, entity.ca):
        if not path.exists():
            raise PkiError(f"{path}: missing (create it with harness.kme.pki or `qiot kme`)")
    return entity


class KnownSaes:
    """Which SAE ids exist for a KME: those the PKI's CA has issued an SAE certificate for.

    ``known(sae_id)`` is True if ``sae/<sae_id>.crt`` in ``pki_dir`` is signed by the folder's CA
    and names that id with role SAE. Positive answers are cached (certificates are not revoked in
    this testbed PKI); a negative one is looked up again next time, so SAEs added later are found.
    """

    def __init__(self, pki_dir: str | os.PathLike[str]):
        self.dir = Path(pki_dir)
        self._ca: x509.Certificate | None = None
        self._known: set[str] = set()

    def __call__(self, sae_id: str) -> bool:
        return self.known(sae_id)

    def known(self, sae_id: str) -> bool:
        """True if the CA has issued an SAE certificate for ``sae_id``."""
        if sae_id in self._known:
            return True
        if not isinstance(sae_id, str) or not ID_PATTERN.match(sae_id):
            return False
        try:
            if self._ca is None:
                self._ca = x509.load_pem_x509_certificate((self.dir / "ca.crt").read_bytes())
            cert = x509.load_pem_x509_certificate((self.dir / _FOLDER["SAE"] / f"{sae_id}.crt").read_bytes())
            cert.verify_directly_issued_by(self._ca)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return False
        if identity_of(cert) != (sae_id, "SAE"):
            return False
        self._known.add(sae_id)
        return True
