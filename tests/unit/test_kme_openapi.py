"""The published OpenAPI document (docs/kme-openapi.yaml) matches what the KME serves."""

from pathlib import Path

import pytest

from harness.kme import etsi
from harness.kme.kme import KeyManager
from harness.kme.suppliers import EmulatedQkdLink, SharedKeyBuffer

yaml = pytest.importorskip("yaml")
DOC = Path(__file__).resolve().parents[2] / "docs" / "kme-openapi.yaml"


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(DOC.read_text(encoding="utf-8"))


def test_paths_and_methods(doc):
    assert doc["openapi"].startswith("3.")
    routes = {path: set(ops) for path, ops in doc["paths"].items()}
    assert routes == {
        "/api/v1/keys/{slave_SAE_ID}/status": {"get"},
        "/api/v1/keys/{slave_SAE_ID}/enc_keys": {"get", "post"},
        "/api/v1/keys/{master_SAE_ID}/dec_keys": {"get", "post"},
        "/kme/v1/issue": {"post"},
        "/kme/v1/reserve": {"post"},
        "/kme/v1/stored": {"get"},
    }
    for path in ("/api/v1/keys/{slave_SAE_ID}/enc_keys", "/api/v1/keys/{master_SAE_ID}/dec_keys"):
        for op in doc["paths"][path].values():
            assert set(op["responses"]) == {"200", "400", "401", "503"}
    assert "content" not in doc["components"]["responses"]["Unauthorized"]


def test_status_schema_matches_the_kme(doc):
    link = EmulatedQkdLink(SharedKeyBuffer(4), rate_bps=0, prefill=4)
    kme = KeyManager("kme-bob", "kme-alice", link.suppliers()[1])
    served = set(kme.status("platform", "gateway"))
    schema = doc["components"]["schemas"]["Status"]
    assert served == set(schema["required"])
    assert served <= set(schema["properties"])
    limits = etsi.KmeLimits()
    assert schema["properties"]["max_key_count"]["example"] == limits.max_key_count
    assert set(doc["components"]["schemas"]["KeyRequest"]["properties"]) == {
        "number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional"}
