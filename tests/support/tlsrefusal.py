"""Test-only: recognise a TLS handshake refused by the server (not any other socket error)."""

from __future__ import annotations

import ssl

import pytest


def assert_tls_refused(excinfo: pytest.ExceptionInfo, *reasons: str) -> None:
    """The failure is the server's TLS refusal: an alert with one of ``reasons`` (OpenSSL reason
    codes, e.g. ``TLSV13_ALERT_CERTIFICATE_REQUIRED``), or the server closing the handshake before
    the client read that alert (``SSLEOFError``; which one the client sees is a race)."""
    exc = excinfo.value
    assert isinstance(exc, ssl.SSLError), f"not a TLS refusal: {exc!r}"
    if not isinstance(exc, ssl.SSLEOFError):
        assert exc.reason in reasons, f"TLS failed for another reason: {exc!r}"
