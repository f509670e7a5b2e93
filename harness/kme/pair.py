"""A pair of KMEs (Alice's and Bob's) served in this process on loopback: for ``qiot kme``, tests
and the benchmark. In ``qiot run`` each KME is its own process (:mod:`harness.kme.server`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import etsi, pki
from .config import KME_ALICE_ID, KME_BOB_ID
from .keystore import KeyStore
from .kme import KeyManager, LocalPeerLink
from .server import KmeServer, MtlsPeerLink
from .suppliers import KeySupplier

# The KMEs' ids are defined once, with the key path's other identities (paper Fig. 1: Alice resides
# in the IoT network, on the gateway side; Bob is connected to the data-centre server).
ALICE_KME_ID, BOB_KME_ID = KME_ALICE_ID, KME_BOB_ID


@dataclass
class KmePair:
    """Two running KMEs; ``alice_url``/``bob_url`` are their https base URLs."""

    alice: KmeServer
    bob: KmeServer
    pki_dir: Path

    @property
    def alice_url(self) -> str:
        return f"https://{self.alice.server_address[0]}:{self.alice.port}"

    @property
    def bob_url(self) -> str:
        return f"https://{self.bob.server_address[0]}:{self.bob.port}"

    def stop(self) -> None:
        """Shut both servers down (and close their key stores)."""
        for server in (self.alice, self.bob):
            server.shutdown()
            server.server_close()
            server.kme.close()


class ListenError(OSError):
    """A KME of the pair could not listen; the message names the KME, address and port."""


def start_pair(pki_dir: str | os.PathLike[str], alice_supplier: KeySupplier, bob_supplier: KeySupplier,
               host: str = "127.0.0.1", alice_port: int = 0, bob_port: int = 0,
               limits: etsi.KmeLimits | None = None, key_store: str | os.PathLike[str] | None = None,
               peer_link: str = "mtls") -> KmePair:
    """Create the KME certificates if needed and serve both KMEs; ports 0 pick free ones.

    ``peer_link``: how the two KMEs coordinate: ``"mtls"`` over their KME-to-KME HTTPS channel
    (as two KME processes do), or ``"local"`` by direct calls (:class:`LocalPeerLink`: the same
    calls, without HTTP and TLS between two objects of one process).

    Slave SAEs must have an SAE certificate from the PKI's CA (:class:`pki.KnownSaes`).
    ``key_store``: a directory under which each KME keeps its key store (``<dir>/<kme_id>``).
    Raises :class:`ListenError` if a port is taken.
    """
    ca = pki.CertificateAuthority(pki_dir)
    ids = (ALICE_KME_ID, BOB_KME_ID)
    entities = [ca.ensure(kme_id, "KME", (host,)) for kme_id in ids]
    known = pki.KnownSaes(pki_dir)
    servers: list[KmeServer] = []
    for (own, peer_id), supplier, port in zip(((entities[0], ids[1]), (entities[1], ids[0])),
                                              (alice_supplier, bob_supplier), (alice_port, bob_port)):
        store = KeyStore(Path(key_store) / own.entity_id if key_store is not None else None)
        kme = KeyManager(own.entity_id, peer_id, supplier, None, limits, known_saes=known, store=store)
        try:
            servers.append(KmeServer((host, port), kme, own))
        except OSError as exc:
            kme.close()
            for server in servers:
                server.kme.close()
                server.server_close()
            raise ListenError(f"{own.entity_id} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    pair = KmePair(servers[0], servers[1], Path(pki_dir))
    if peer_link == "local":
        pair.alice.kme.peer, pair.bob.kme.peer = LocalPeerLink(pair.bob.kme), LocalPeerLink(pair.alice.kme)
    elif peer_link == "mtls":
        pair.alice.kme.peer = MtlsPeerLink(pair.bob_url, BOB_KME_ID, entities[0])
        pair.bob.kme.peer = MtlsPeerLink(pair.alice_url, ALICE_KME_ID, entities[1])
    else:
        raise ValueError(f"peer_link must be 'mtls' or 'local', got {peer_link!r}")
    for server in servers:
        server.start_in_thread()
    return pair
