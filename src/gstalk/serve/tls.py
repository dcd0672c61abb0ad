"""HTTPS and WSS for ``gstalk serve``: the server's ``ssl.SSLContext`` from ``--certfile/--keyfile``.

A browser gives the microphone only to a secure origin (https, or localhost), so serving anywhere but
loopback needs a certificate: from the operator's CA, or self-signed for a test (the browser then asks
to accept it once). The page opens ``wss://`` when it was loaded over ``https://``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..errors import GstalkError


def _check_readable(path: Path, flag: str) -> None:
    if not path.exists():
        raise GstalkError(f"{flag} {path} does not exist", f"give {flag} the path of a PEM file")
    if not path.is_file():
        raise GstalkError(f"{flag} {path} is not a file", f"give {flag} the path of a PEM file")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as err:
        raise GstalkError(
            f"cannot read {flag} {path}: {err.strerror or err}",
            "make the file readable by the user running gstalk serve",
        ) from None


def server_context(certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext | None:
    """The TLS context for the listening socket, or None for plain HTTP (no ``--certfile``).

    ``certfile``: PEM certificate chain (it may hold the private key too, then ``keyfile`` may be
    omitted); ``keyfile``: its PEM private key (unencrypted: there is no one to type a passphrase).
    Raises GstalkError for a missing or unreadable file, a file that is not PEM, a key that does not
    match the certificate, or a key without a certificate. Follows ``ssl.SSLContext.load_cert_chain``.
    """
    if certfile is None:
        if keyfile is not None:
            raise GstalkError("--keyfile given without --certfile", "give --certfile CERT.pem as well")
        return None
    certfile = Path(certfile)
    _check_readable(certfile, "--certfile")
    if keyfile is not None:
        keyfile = Path(keyfile)
        _check_readable(keyfile, "--keyfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile, password=lambda: b"")
    except ssl.SSLError as err:
        reason = (err.reason or str(err)).upper()
        if "MISMATCH" in reason:
            raise GstalkError(
                f"the key in {keyfile or certfile} does not belong to the certificate in {certfile}",
                "give the --keyfile that was made with this --certfile",
            ) from None
        raise GstalkError(
            f"cannot load the certificate {certfile} / key {keyfile or certfile}: {err.reason or err}",
            "give PEM files (-----BEGIN CERTIFICATE----- and an unencrypted -----BEGIN PRIVATE KEY-----)",
        ) from None
    return context
