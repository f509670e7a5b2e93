"""ETSI GS QKD 014 conformance of the KME pair over real mutual TLS on 127.0.0.1.

Written from the spec's rules (reference.md section 4): every endpoint, the error cases
(400, 401 and 503 with the Error body {message, details}: ETSI GS QKD 014 V1.1.1 sections 5.1-5.3, 6.4), keys delivered once and only to the
slave SAE named at issue, dec_keys byte-identical to enc_keys, and the mTLS refusals.
"""

import base64
import binascii
import json
import logging
import re
import ssl
import uuid

import pytest

from harness.kme import etsi, pki
from harness.kme.client import EtsiClient, HttpClient
from harness.kme.pair import ALICE_KME_ID, BOB_KME_ID, start_pair
from harness.kme.tlshttp import client_context
from tests.support.clavislink import ClavisLinkPair
from tests.support.tlsrefusal import assert_tls_refused

BUFFER_KEYS = 3906  # paper: 1 Mbit key buffer of 256-bit keys (reference.md section 1)
LIMITS = etsi.KmeLimits(max_key_per_request=50)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A running KME pair over real Clavis services, and client certificates for three SAEs."""
    pki_dir = tmp_path_factory.mktemp("pki")
    link = ClavisLinkPair(rate_bps=0, capacity_keys=BUFFER_KEYS, seed=7, prefill_keys=BUFFER_KEYS).start()
    pair = start_pair(pki_dir, *link.suppliers(), limits=LIMITS)
    ca = pki.CertificateAuthority(pki_dir)
    for sae in ("gateway", "platform", "intruder"):
        ca.ensure(sae, "SAE")
    yield pair, link.bob_buffer
    pair.stop()
    link.stop()


def sae(pair, sae_id, side):
    """An ETSI client for ``sae_id`` talking to Alice's ("alice") or Bob's ("bob") KME."""
    ent = pki.entity_paths(pair.pki_dir, sae_id, "SAE")
    url, kme_id = (pair.alice_url, ALICE_KME_ID) if side == "alice" else (pair.bob_url, BOB_KME_ID)
    return EtsiClient(url, kme_id, ent.ca, ent.cert, ent.key)


def raw(pair, sae_id, side, method, path, body=None):
    """(status, JSON body or None) of one request, without the ETSI client's error mapping."""
    client = sae(pair, sae_id, side).http
    try:
        return client.request(method, path, body)
    finally:
        client.close()


#: A 401 answer: status and the Error data format (spec section 6.4), saying nothing more.
UNAUTHORIZED = (401, {"message": "unauthorized"})
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# --- status ------------------------------------------------------------------------------------
@pytest.mark.parametrize("side,master,slave,source,target", [
    ("alice", "gateway", "platform", ALICE_KME_ID, BOB_KME_ID),
    ("bob", "platform", "gateway", BOB_KME_ID, ALICE_KME_ID)])
def test_status_fields(env, side, master, slave, source, target):
    pair, buffer = env
    status = sae(pair, master, side).status(slave)
    assert {k: status[k] for k in ("source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID")} == \
        {"source_KME_ID": source, "target_KME_ID": target, "master_SAE_ID": master, "slave_SAE_ID": slave}
    ints = ("key_size", "stored_key_count", "max_key_count", "max_key_per_request", "max_key_size",
            "min_key_size", "max_SAE_ID_count")
    assert all(type(status[k]) is int for k in ints)
    assert (status["key_size"], status["max_key_count"], status["max_key_per_request"]) == (256, 3906, 50)
    assert status["stored_key_count"] == buffer.available


def test_stored_key_count_drops_by_delivered_keys(env):
    pair, _ = env
    gateway = sae(pair, "gateway", "alice")
    before = gateway.status("platform")["stored_key_count"]
    gateway.enc_keys("platform", number=5)
    assert gateway.status("platform")["stored_key_count"] == before - 5


# --- enc_keys / dec_keys: happy paths ---------------------------------------------------------
@pytest.mark.parametrize("master_side", ["alice", "bob"])
def test_post_enc_then_post_dec_byte_identical(env, master_side):
    pair, _ = env
    (master, slave, slave_side) = (("gateway", "platform", "bob") if master_side == "alice"
                                   else ("platform", "gateway", "alice"))
    status, body = raw(pair, master, master_side, "POST", f"/api/v1/keys/{slave}/enc_keys", {"number": 4})
    assert status == 200 and set(body) == {"keys"} and len(body["keys"]) == 4
    for entry in body["keys"]:
        assert UUID_RE.match(entry["key_ID"])
        assert len(base64.b64decode(entry["key"], validate=True)) == 32
    ids = [k["key_ID"] for k in body["keys"]]
    status, dec = raw(pair, slave, slave_side, "POST", f"/api/v1/keys/{master}/dec_keys",
                      {"key_IDs": [{"key_ID": i} for i in ids]})
    assert status == 200 and dec == body


def test_get_enc_with_query_and_get_dec_with_key_id(env):
    pair, _ = env
    status, body = raw(pair, "gateway", "alice", "GET", "/api/v1/keys/platform/enc_keys?number=3&size=128")
    assert status == 200
    assert [len(base64.b64decode(k["key"])) for k in body["keys"]] == [16, 16, 16]
    first = body["keys"][0]
    status, dec = raw(pair, "platform", "bob", "GET", f"/api/v1/keys/gateway/dec_keys?key_ID={first['key_ID']}")
    assert status == 200 and dec == {"keys": [first]}
    ids = "&".join(f"key_ID={k['key_ID']}" for k in body["keys"][1:])
    status, dec = raw(pair, "platform", "bob", "GET", f"/api/v1/keys/gateway/dec_keys?{ids}")
    assert status == 200 and dec == {"keys": body["keys"][1:]}


def test_defaults_one_key_of_key_size(env):
    pair, _ = env
    status, body = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", {})
    assert status == 200 and len(body["keys"]) == 1 and len(base64.b64decode(body["keys"][0]["key"])) == 32
    status, body = raw(pair, "gateway", "alice", "GET", "/api/v1/keys/platform/enc_keys")
    assert status == 200 and len(body["keys"]) == 1


def test_keys_never_delivered_twice(env):
    pair, _ = env
    gateway = sae(pair, "gateway", "alice")
    platform = sae(pair, "platform", "bob")
    issued = [kid for _ in range(5) for kid, _ in gateway.enc_keys("platform", number=10)]
    issued += [kid for kid, _ in platform.enc_keys("gateway", number=10)]
    assert len(set(issued)) == len(issued) == 60
    key_id = issued[0]
    assert platform.dec_keys("gateway", [key_id])[0][0] == key_id
    status, body = raw(pair, "platform", "bob", "POST", "/api/v1/keys/gateway/dec_keys",
                       {"key_IDs": [{"key_ID": key_id}]})
    assert status == 400 and body["message"] == "key_ID not found"


def test_same_key_on_both_sides_smaller_size(env):
    pair, _ = env
    keys = sae(pair, "platform", "bob").enc_keys("gateway", number=2, size=8)
    assert [len(k) for _, k in keys] == [1, 1]
    assert sae(pair, "gateway", "alice").dec_keys("platform", [k for k, _ in keys]) == keys


# --- dec_keys authorisation ---------------------------------------------------------------------
def test_dec_keys_only_for_the_named_slave(env):
    pair, _ = env
    (kid, key), = sae(pair, "gateway", "alice").enc_keys("platform")
    # Another SAE at the same KME, same master in the path: 401 with the Error body.
    assert raw(pair, "intruder", "bob", "GET", f"/api/v1/keys/gateway/dec_keys?key_ID={kid}") == UNAUTHORIZED
    # The master itself asking at the peer KME: 401.
    assert raw(pair, "gateway", "bob", "GET", f"/api/v1/keys/gateway/dec_keys?key_ID={kid}") == UNAUTHORIZED
    # The right slave naming the wrong master: 401.
    assert raw(pair, "platform", "bob", "GET", f"/api/v1/keys/intruder/dec_keys?key_ID={kid}") == UNAUTHORIZED
    # Refusals consumed nothing: the slave still gets the very key.
    assert sae(pair, "platform", "bob").dec_keys("gateway", [kid]) == [(kid, key)]


def test_dec_keys_all_or_nothing(env):
    pair, _ = env
    keys = sae(pair, "gateway", "alice").enc_keys("platform", number=2)
    status, _ = raw(pair, "platform", "bob", "POST", "/api/v1/keys/gateway/dec_keys",
                    {"key_IDs": [{"key_ID": keys[0][0]}, {"key_ID": str(uuid.uuid4())}]})
    assert status == 400
    assert sae(pair, "platform", "bob").dec_keys("gateway", [k for k, _ in keys]) == keys


# --- 400 cases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,query,body,message", [
    ("POST", "", {"size": 100}, "size shall be a multiple of 8"),
    ("GET", "?size=100", None, "size shall be a multiple of 8"),
    ("GET", "?number=2&size=12", None, "size shall be a multiple of 8"),
    ("POST", "", {"size": 512}, "requested key size is out of range"),
    ("POST", "", {"size": 0}, "requested key size is out of range"),
    ("POST", "", {"number": 0}, "number shall be a positive integer"),
    ("POST", "", {"number": -3}, "number shall be a positive integer"),
    ("POST", "", {"number": 51}, "number of keys requested exceeds max_key_per_request"),
    ("GET", "?number=abc", None, "number shall be an integer"),
    ("POST", "", {"number": "two"}, "number shall be an integer"),
    ("POST", "", {"number": True}, "number shall be an integer"),
    ("POST", "", {"size": 1.5}, "size shall be an integer"),
    ("GET", "?number=1&additional_slave_SAE_IDs=x", None, "only number and size may be given with GET"),
    ("GET", "?number=1&number=2", None, "number given more than once"),
    ("POST", "", {"additional_slave_SAE_IDs": ["d1"]}, "additional_slave_SAE_IDs exceeds max_SAE_ID_count"),
    ("POST", "", {"extension_mandatory": [{"abc": 1}]}, "not all extension_mandatory parameters are supported"),
    ("POST", "", {"colour": "blue"}, "unknown request parameter"),
    ("POST", "", ["number", 1], "request body shall be a JSON object"),
])
def test_enc_keys_400(env, method, query, body, message):
    pair, _ = env
    status, answer = raw(pair, "gateway", "alice", method, f"/api/v1/keys/platform/enc_keys{query}", body)
    assert status == 400
    assert answer["message"] == message
    assert isinstance(answer.get("details", []), list)


def test_enc_keys_400_details_name_the_value(env):
    pair, _ = env
    status, answer = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", {"size": 100})
    assert (status, answer) == (400, {"message": "size shall be a multiple of 8", "details": [{"size": 100}]})


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b'"a string"'])
def test_malformed_bodies_400(env, payload):
    pair, _ = env
    for side, path in (("alice", "/api/v1/keys/platform/enc_keys"), ("bob", "/api/v1/keys/gateway/dec_keys")):
        status, answer = raw(pair, "gateway" if side == "alice" else "platform", side, "POST", path, payload)
        assert status == 400 and answer["message"]


def test_empty_post_body_means_defaults_and_self_as_slave_refused(env):
    pair, _ = env
    status, answer = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", b"")
    assert status == 200 and len(answer["keys"]) == 1
    status, answer = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/gateway/enc_keys", {})
    assert status == 400 and "slave_SAE_ID" in answer["message"]


@pytest.mark.parametrize("method,query,body,message", [
    ("GET", "", None, "key_ID is required"),
    ("GET", "?key_ID=nonsense", None, "key_ID is not a valid key ID"),
    ("GET", f"?key_ID={uuid.uuid4()}", None, "key_ID is not a valid key ID"),
    ("GET", "?key_ID=91071d00-0000-8000-8000-00000000ffff&x=1", None, "only key_ID may be given with GET"),
    ("GET", "?key_ID=91071d00-0000-8000-8000-00000000ffff", None, "key_ID not found"),
    ("POST", "", {}, "key_IDs shall be a non-empty array"),
    ("POST", "", {"key_IDs": []}, "key_IDs shall be a non-empty array"),
    ("POST", "", {"key_IDs": ["91071d00-0000-8000-8000-00000000ffff"]},
     "each key_IDs entry shall be an object with a key_ID string"),
    ("POST", "", {"key_IDs": [{"key_ID": f"91071d00-0000-8000-8000-{i:012x}"} for i in range(1, 52)]},
     "number of key_IDs exceeds max_key_per_request"),
])
def test_dec_keys_400(env, method, query, body, message):
    pair, _ = env
    status, answer = raw(pair, "platform", "bob", method, f"/api/v1/keys/gateway/dec_keys{query}", body)
    assert status == 400 and answer["message"] == message


def test_unknown_resource_404(env):
    pair, _ = env
    assert raw(pair, "gateway", "alice", "GET", "/api/v1/keys/platform/keys") == (404, {"message": "no such resource"})


def raw_with_headers(pair, method, path):
    """(status, headers, raw body) of one request by the gateway SAE to Alice's KME, kept alive."""
    client = sae(pair, "gateway", "alice").http
    try:
        client.request("GET", "/api/v1/keys/platform/status")  # open the connection first
        conn = client._conn
        conn.request(method, path)
        response = conn.getresponse()
        answer = (response.status, dict(response.getheaders()), response.read())
        # The connection is still in step: the next request on it is answered normally.
        assert client.request("GET", "/api/v1/keys/platform/status")[0] == 200
        return answer
    finally:
        client.close()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD", "POST", "GET"])
@pytest.mark.parametrize("path,allow", [("/api/v1/keys/platform/status", "GET"),
                                        ("/api/v1/keys/platform/enc_keys", "GET, POST"),
                                        ("/api/v1/keys/platform/dec_keys", "GET, POST")])
def test_undeclared_methods_405_with_allow_and_json(env, method, path, allow):
    if method in allow:
        pytest.skip("declared")
    pair, _ = env
    status, headers, body = raw_with_headers(pair, method, path)
    assert status == 405 and headers["Allow"] == allow
    if method == "HEAD":  # a HEAD answer has headers only (RFC 9110), its length still announced
        assert body == b"" and int(headers["Content-Length"]) > 0
    else:
        assert headers["Content-Type"].startswith("application/json")
        assert method in json.loads(body)["message"]


def test_any_other_method_405_and_unknown_path_404(env):
    pair, _ = env
    status, headers, body = raw_with_headers(pair, "QUERY", "/api/v1/keys/platform/status")
    assert (status, headers["Allow"]) == (405, "GET") and json.loads(body)["message"]
    status, _, body = raw_with_headers(pair, "BREW", "/coffee")
    assert status == 404 and json.loads(body) == {"message": "no such resource"}


@pytest.mark.parametrize("body,message", [
    ({"number": 1, "size": None}, "size shall be an integer"),
    ({"number": None}, "number shall be an integer"),
    ({"number": "2"}, "number shall be an integer"),
    ({"number": 2.0}, "number shall be an integer"),
    ({"number": 1, "size": "256"}, "size shall be an integer"),
    ({"additional_slave_SAE_IDs": [1]}, "additional_slave_SAE_IDs shall be an array of strings"),
    ({"extension_optional": ["x"]}, "extension_optional shall be an array of objects"),
    ({"extension_mandatory": {}}, "extension_mandatory shall be an array of objects"),
])
def test_wrong_json_types_400_and_no_key_used(env, body, message):
    pair, buffer = env
    before = buffer.available
    status, answer = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", body)
    assert (status, answer["message"]) == (400, message)
    assert buffer.available == before


@pytest.mark.parametrize("query", ["?number=%C2%B2", "?number=" + "9" * 5000, "?size=1e3"])
def test_odd_query_integers_400(env, query):
    pair, _ = env
    status, answer = raw(pair, "gateway", "alice", "GET", f"/api/v1/keys/platform/enc_keys{query}")
    assert status == 400 and "shall be an integer" in answer["message"]


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"number": ' + b"9" * 5000 + b"}"])
def test_pathological_json_400(env, payload):
    pair, _ = env
    status, answer = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", payload)
    assert status == 400 and answer["message"] == "request body is not valid UTF-8 JSON"


@pytest.mark.parametrize("side,master", [("alice", "gateway"), ("bob", "platform")])
def test_unknown_slave_sae_400_without_using_keys(env, side, master):
    """An SAE exists when the CA has issued it an SAE certificate; naming another id uses nothing."""
    pair, buffer = env
    before = buffer.available
    for method, path, body in (("POST", "/api/v1/keys/nobody/enc_keys", {"number": 3}),
                               ("GET", "/api/v1/keys/nobody/enc_keys?number=3", None),
                               ("GET", "/api/v1/keys/nobody/status", None),
                               ("GET", "/api/v1/keys/kme-bob/status", None)):  # a KME is not an SAE
        status, answer = raw(pair, master, side, method, path, body)
        assert status == 400 and answer["message"] == "slave_SAE_ID is not a known SAE", (method, path)
    assert buffer.available == before
    assert sae(pair, master, side).status("intruder")["slave_SAE_ID"] == "intruder"  # has a certificate


# --- 503 ----------------------------------------------------------------------------------------
def test_503_when_the_buffer_runs_dry(tmp_path):
    link = ClavisLinkPair(rate_bps=0, capacity_keys=10, seed=1, prefill_keys=3).start()
    pair = start_pair(tmp_path, *link.suppliers())
    pki.CertificateAuthority(tmp_path).ensure("gateway", "SAE")
    pki.CertificateAuthority(tmp_path).ensure("platform", "SAE")
    try:
        status, body = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", {"number": 4})
        assert status == 503 and body["message"]
        # Nothing was lost by the failed request: the three keys are still there.
        assert sae(pair, "platform", "bob").status("gateway")["stored_key_count"] == 3
        assert len(sae(pair, "platform", "bob").enc_keys("gateway", number=3)) == 3
        status, body = raw(pair, "gateway", "alice", "GET", "/api/v1/keys/platform/enc_keys")
        assert status == 503 and body["message"]
    finally:
        pair.stop()
        link.stop()


def test_503_when_the_peer_kme_is_down(tmp_path):
    link = ClavisLinkPair(rate_bps=0, capacity_keys=10, seed=1, prefill_keys=10).start()
    pair = start_pair(tmp_path, *link.suppliers())
    for sae_id in ("gateway", "platform"):
        pki.CertificateAuthority(tmp_path).ensure(sae_id, "SAE")
    pair.bob.shutdown()
    pair.bob.server_close()
    try:
        status, body = raw(pair, "gateway", "alice", "POST", "/api/v1/keys/platform/enc_keys", {})
        assert status == 503 and "peer KME" in body["message"]
    finally:
        pair.alice.shutdown()
        pair.alice.server_close()
        link.stop()


# --- mutual TLS ---------------------------------------------------------------------------------
def test_no_client_certificate_refused(env):
    pair, _ = env
    ca = pair.pki_dir / "ca.crt"
    with pytest.raises(ssl.SSLError) as refused:
        HttpClient(pair.alice_url, client_context(ca), ALICE_KME_ID).request("GET", "/api/v1/keys/platform/status")
    assert_tls_refused(refused, "TLSV13_ALERT_CERTIFICATE_REQUIRED")


def test_certificate_from_another_ca_refused(env, tmp_path):
    pair, _ = env
    rogue = pki.CertificateAuthority(tmp_path / "rogue").ensure("gateway", "SAE")
    tls = client_context(pair.pki_dir / "ca.crt", rogue.cert, rogue.key)
    with pytest.raises(ssl.SSLError) as refused:
        HttpClient(pair.alice_url, tls, ALICE_KME_ID).request("POST", "/api/v1/keys/platform/enc_keys", {})
    assert_tls_refused(refused, "TLSV1_ALERT_UNKNOWN_CA")


def test_sae_refuses_kme_with_wrong_id_or_foreign_ca(env, tmp_path):
    pair, _ = env
    gw = pki.entity_paths(pair.pki_dir, "gateway", "SAE")
    with pytest.raises(ssl.SSLCertVerificationError):
        EtsiClient(pair.alice_url, BOB_KME_ID, gw.ca, gw.cert, gw.key).status("platform")
    rogue_ca = pki.CertificateAuthority(tmp_path / "rogue2").cert_path
    with pytest.raises(ssl.SSLCertVerificationError):
        EtsiClient(pair.alice_url, ALICE_KME_ID, rogue_ca, gw.cert, gw.key).status("platform")


def test_kme_to_kme_channel_refuses_saes_and_other_kmes(env):
    pair, _ = env
    body = {"master_SAE_ID": "intruder", "slave_SAE_ID": "platform", "number": 1, "size": 256}
    assert raw(pair, "intruder", "bob", "POST", "/kme/v1/issue", body) == UNAUTHORIZED
    assert raw(pair, "intruder", "alice", "GET", "/kme/v1/stored") == UNAUTHORIZED
    # A KME certificate that is not the configured peer: 401 too.
    ca = pki.CertificateAuthority(pair.pki_dir)
    other = ca.ensure("kme-eve", "KME", ("127.0.0.1",))
    client = HttpClient(pair.bob_url, client_context(other.ca, other.cert, other.key), BOB_KME_ID)
    assert client.request("POST", "/kme/v1/issue", body) == UNAUTHORIZED
    # And a KME certificate may not act as an SAE.
    assert client.request("GET", "/api/v1/keys/platform/status") == UNAUTHORIZED


def test_tls_1_2_minimum_and_client_certificate_required(env):
    pair, _ = env
    for server in (pair.alice, pair.bob):
        assert server.tls.minimum_version == ssl.TLSVersion.TLSv1_2
        assert server.tls.verify_mode == ssl.CERT_REQUIRED


def test_attached_saes_restriction(env):
    pair, _ = env
    pair.bob.kme.attached_saes = frozenset({"platform"})
    try:
        assert raw(pair, "intruder", "bob", "GET", "/api/v1/keys/gateway/status") == UNAUTHORIZED
        assert raw(pair, "platform", "bob", "GET", "/api/v1/keys/gateway/status")[0] == 200
    finally:
        pair.bob.kme.attached_saes = None


def test_key_material_never_logged(env, caplog):
    pair, _ = env
    caplog.set_level(logging.DEBUG)
    keys = sae(pair, "gateway", "alice").enc_keys("platform", number=3)
    keys += sae(pair, "platform", "bob").dec_keys("gateway", [k for k, _ in keys])
    raw(pair, "platform", "bob", "GET", f"/api/v1/keys/gateway/dec_keys?key_ID={keys[0][0]}")
    assert "enc_keys" in caplog.text  # the operations were logged...
    for _, key in keys:  # ...without their keys, in any usual encoding
        for form in (base64.b64encode(key).decode(), binascii.hexlify(key).decode(), repr(key)):
            assert form not in caplog.text


def test_client_survives_the_server_closing_an_idle_connection(env):
    pair, _ = env
    import time
    gateway = sae(pair, "gateway", "alice")
    old = pair.alice.idle_timeout_s
    pair.alice.idle_timeout_s = 0.1
    try:
        gateway.status("platform")
        time.sleep(0.4)  # the server drops the kept-alive connection meanwhile
        assert gateway.status("platform")["source_KME_ID"] == ALICE_KME_ID
        assert gateway.http.counters.full == 2
    finally:
        pair.alice.idle_timeout_s = old


def test_for_sae_without_kme_id_accepts_only_kme_certificates(env, tmp_path):
    pair, _ = env
    client = EtsiClient.for_sae(pair.alice_url, pair.pki_dir, "gateway")
    assert client.status("platform")["source_KME_ID"] == ALICE_KME_ID
    assert EtsiClient.for_sae(pair.alice_url, pair.pki_dir, "gateway", ALICE_KME_ID).status("platform")
    # A relay certificate from the same CA serving on some port is not taken for a KME.
    from harness.kme.relay import RelayServer
    from harness.kme.lifecycle import GatewayKeyLifecycle
    relay = RelayServer(("127.0.0.1", 0), "tls_full", GatewayKeyLifecycle(client, "platform", ["d1"], 1800.0),
                        pair.pki_dir)
    relay.start_in_thread()
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="not a KME"):
            EtsiClient.for_sae(relay.url, pair.pki_dir, "gateway").status("platform")
    finally:
        relay.shutdown()
        relay.server_close()
