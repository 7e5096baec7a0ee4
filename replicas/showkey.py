"""The show key: one shared credential that admits nodes and tools to a controller.

A show network is shared with other gear (lighting desks, laptops, guests' phones). With a
key, the controller listens with TLS (NNG's ``tls+tcp://``) and requires every peer to prove
it holds the same key; nodes and tools check the controller the same way. Without the key a
peer cannot connect at all: it can neither submit nor read (the event stream is TLS too), and
a hello recorded off the wire cannot be replayed (TLS sessions are never replayable).

The key file is PEM: a self-signed certificate and its private key (EC P-256), made by
`generate` (``cuelog keygen FILE``) and copied to every machine of the show. Everyone uses it
both as their own certificate and as the only authority they trust, so holding the file is
what proves membership. The certificate names the host ``cuelog`` (checked instead of the
controller's address, which may be an IP) and is valid from 2000 to 2100, so a machine whose
clock was reset still connects.

Addresses stay ``tcp://HOST:PORT`` on the command line; with a key they become
``tls+tcp://HOST:PORT`` on the sockets (`secure`).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pynng
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eventlog import CuelogError

#: the host name the certificate is made for and every peer checks
SERVER_NAME: Final = "cuelog"
#: a key file is a few hundred bytes; anything this big is not one
MAX_KEY_FILE_BYTES: Final = 64 * 1024
TLS_PREFIX: Final = "tls+tcp://"
#: the environment variable that names the key file when none is passed (CLI, seed API)
KEY_ENV: Final = "CUELOG_KEY"


class KeyFileError(CuelogError):
    """The show key file is missing, unreadable or not a show key."""


@dataclass(frozen=True)
class ShowKey:
    """A loaded show key. `fingerprint` identifies it in logs and status (not secret)."""

    path: Path
    cert_pem: str
    key_pem: str
    fingerprint: str
    #: said once at start when the file is readable by other users of its machine
    warning: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> ShowKey:
        """Read and check a key file; raises `KeyFileError` saying what to do."""
        path = Path(path)
        make = f"make one with `cuelog keygen {path}` and copy it to every machine of the show"
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise KeyFileError(f"the show key {path} is not a file: {make}")
            if info.st_size > MAX_KEY_FILE_BYTES:
                raise KeyFileError(f"{path} is {info.st_size} bytes: not a show key ({make})")
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"no show key at {path}: {make}") from None
        except PermissionError:
            raise KeyFileError(
                f"cannot read the show key {path} (permission denied): run as its owner"
            ) from None
        except OSError as exc:
            raise KeyFileError(f"cannot read the show key {path}: {exc.strerror}") from None
        try:
            cert = x509.load_pem_x509_certificate(raw)
        except ValueError:
            raise KeyFileError(
                f"{path} holds no certificate: it is not a show key ({make})"
            ) from None
        try:
            private = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError):
            raise KeyFileError(
                f"{path} holds no readable private key: it is not a show key ({make})"
            ) from None
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ours = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != ours:
            raise KeyFileError(
                f"the private key in {path} does not belong to its certificate: the file is "
                "damaged; copy it again from the machine that made it"
            )
        _check_made_by_keygen(cert, path, make)
        der = cert.public_bytes(serialization.Encoding.DER)
        warning = None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warning = (
                f"the show key {path} can be read by other users of this machine: chmod 600 {path}"
            )
        return cls(
            path=path,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            fingerprint=hashlib.sha256(der).hexdigest()[:16],
            warning=warning,
        )

    def _config(self, mode: Any) -> pynng.TLSConfig:
        return pynng.TLSConfig(
            mode,
            server_name=SERVER_NAME if mode == pynng.TLSConfig.MODE_CLIENT else None,
            ca_string=self.cert_pem,
            own_cert_string=self.cert_pem,
            own_key_string=self.key_pem,
            auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
        )

    def server(self) -> pynng.TLSConfig:
        """The TLS setup of the controller's listening sockets (peers must hold the key)."""
        return self._config(pynng.TLSConfig.MODE_SERVER)

    def client(self) -> pynng.TLSConfig:
        """The TLS setup of a dialing socket (node or tool); it checks the controller too."""
        return self._config(pynng.TLSConfig.MODE_CLIENT)


def _check_made_by_keygen(cert: x509.Certificate, path: Path, make: str) -> None:
    """A certificate every peer can accept: made for `SERVER_NAME`, valid now, its own
    authority. Anything else would load and then fail every handshake, looking like a wrong
    key."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        hosts = []
    if SERVER_NAME not in hosts:
        raise KeyFileError(
            f"{path} is a certificate for {', '.join(hosts) or 'no host name'}, not a show key "
            f"(the key names the host {SERVER_NAME!r}): {make}"
        )
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise KeyFileError(
            f"the show key {path} is valid only from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d} (is this machine's clock right?): {make}"
        )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        authority = constraints.ca
    except x509.ExtensionNotFound:
        authority = False
    if not authority:
        raise KeyFileError(f"{path} cannot vouch for itself, so it is not a show key: {make}")


def generate(path: str | Path, *, force: bool = False) -> ShowKey:
    """Write a new show key to `path` (mode 600) and return it. Refuses to replace an
    existing file unless `force`: every machine of the show would have to be given the new one."""
    path = Path(path)
    if path.exists() and not force:
        raise KeyFileError(
            f"{path} already exists; every machine of the show holds a copy of it. Pass "
            "--force to replace it (then copy the new one everywhere)"
        )
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cuelog show key")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + cert.public_bytes(serialization.Encoding.PEM)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ShowKey.load(path)


def secure(address: str, key: ShowKey | None) -> str:
    """The address the sockets use: `address` itself without a key, its ``tls+tcp://`` form
    with one. Raises ValueError for an address a key cannot protect, or TLS without a key."""
    if key is None:
        if address.startswith(TLS_PREFIX):
            raise ValueError(f"{address} is a TLS address: give the show key with --key FILE")
        return address
    if address.startswith(TLS_PREFIX):
        return address
    if address.startswith("tcp://"):
        return TLS_PREFIX + address[len("tcp://") :]
    raise ValueError(
        f"--key protects tcp:// addresses; {address} is reachable only on this machine "
        "(use tcp://HOST:PORT, or no key)"
    )


def load_optional(path: str | Path | None) -> ShowKey | None:
    """`ShowKey.load(path)`, or None when no path is given."""
    return None if path is None or str(path) == "" else ShowKey.load(path)


def diagnose(address: str, key: ShowKey | None, timeout: float = 2.0) -> str:
    """Why a dial to `address` (its socket form, see `secure`) fails, in words an operator can
    act on; "" if it connects. Returns within about `timeout` seconds even when the other side
    accepts the connection and then says nothing (a frozen controller): run it off the loop."""
    tls = {} if key is None else {"tls_config": key.client()}
    sock = pynng.Req0(send_timeout=int(timeout * 1000), **tls)
    found: list[str] = []
    done = threading.Event()

    def dial() -> None:
        try:
            sock.dial(address, block=True)
            found.append("")
        except BaseException as exc:
            found.append(_why(exc, key))
        finally:
            done.set()

    # a blocking dial has no timeout of its own (a handshake with a stopped process waits
    # forever): it runs in a thread, and closing the socket ends it
    threading.Thread(target=dial, name="cuelog-diagnose", daemon=True).start()
    finished = done.wait(timeout)
    sock.close()
    if not finished:
        return (
            "it accepts connections but does not answer (is the controller frozen or "
            "overloaded, or is something else listening there?)"
        )
    return found[0] if found else ""


def _why(exc: BaseException, key: ShowKey | None) -> str:
    if isinstance(exc, pynng.ConnectionRefused):
        return "nothing listens there: is it running, and is the address right (--controller)?"
    if isinstance(exc, pynng.CryptoError | pynng.AuthenticationError):
        if key is None:
            return "the TLS handshake failed"
        return (
            f"the TLS handshake failed: the controller does not hold this show key "
            f"({key.fingerprint}), or it runs without one; give every machine the same --key"
        )
    if key is None and "shutdown" in str(exc).lower():
        return (
            "the controller closed the connection at once: it probably requires a show key "
            "(start this one with --key FILE)"
        )
    return str(exc) or type(exc).__name__
