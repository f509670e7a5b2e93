"""Key management and delivery: ETSI GS QKD 014 KMEs over mutual TLS, and the key path to devices.

Modules: :mod:`keyids` (Clavis id <-> UUID), :mod:`pki` (local CA, certificates, device PSKs,
known SAEs), :mod:`suppliers` (a KME's key source: its QKD end over Clavis UDP), :mod:`etsi`
(request/response rules of the spec), :mod:`keystore` (reservations and pool, optionally on disk),
:mod:`kme` (the key-management core and KME-to-KME coordination), :mod:`tlshttp` (threaded mTLS
HTTP server), :mod:`client` (mTLS HTTP client), :mod:`server` (KME process), :mod:`pair` (both KMEs
in one process), :mod:`linkprocess` (the emulated QKD link of ``qiot kme`` in a child process),
:mod:`lifecycle` (provisioning and refresh), :mod:`wrap`, :mod:`relay` and :mod:`device`
(gateway -> device wireless hop), :mod:`cli` (``qiot kme``). Nothing here imports Mininet.
"""
