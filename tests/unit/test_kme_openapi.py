"""The published OpenAPI document (docs/kme-openapi.yaml) is valid and matches what the KME serves."""

from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from harness.kme import etsi, pki, server
from harness.kme.kme import KeyManager
from tests.support.clavislink import ClavisLinkPair

DOC = Path(__file__).resolve().parents[2] / "docs" / "kme-openapi.yaml"


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(DOC.read_text(encoding="utf-8"))


def test_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"] == "3.1.0"  # the mutualTLS security scheme exists only from 3.1
    validate(doc)
    broken = {**doc, "components": {**doc["components"],
                                    "securitySchemes": {"mutualTLS": {"type": "mutualTLS-typo"}}}}
    with pytest.raises(OpenAPIValidationError):  # the validator does look at the security schemes
        validate(broken)


def test_paths_and_methods(doc):
    routes = {path: {m.upper() for m in ops} for path, ops in doc["paths"].items()}
    served = {f"{etsi.API_PREFIX}{{{'master' if action == 'dec_keys' else 'slave'}_SAE_ID}}/{action}": set(methods)
              for action, methods in server.ETSI_METHODS.items()}
    served.update({path: set(methods) for path, methods in server.PEER_METHODS.items()})
    assert routes == served
    for path in ("/api/v1/keys/{slave_SAE_ID}/enc_keys", "/api/v1/keys/{master_SAE_ID}/dec_keys"):
        for op in doc["paths"][path].values():
            assert set(op["responses"]) == {"200", "400", "401", "503"}
    unauthorized = doc["components"]["responses"]["Unauthorized"]
    assert unauthorized["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_limits_in_the_document_are_the_kmes(doc):
    schemas, limits = doc["components"]["schemas"], etsi.KmeLimits()
    assert (schemas["KeySize"]["minimum"], schemas["KeySize"]["maximum"], schemas["KeySize"]["multipleOf"]) == \
        (limits.min_key_size, limits.max_key_size, 8)
    assert (schemas["KeyNumber"]["minimum"], schemas["KeyNumber"]["maximum"]) == (1, limits.max_key_per_request)
    assert schemas["SaeId"]["pattern"] == pki.ID_PATTERN.pattern


def test_status_schema_matches_the_kme(doc):
    link = ClavisLinkPair(rate_bps=0, capacity_keys=4, prefill_keys=4).start()
    try:
        kme = KeyManager("kme-bob", "kme-alice", link.suppliers()[1])
        served = set(kme.status("platform", "gateway"))
    finally:
        link.stop()
    schema = doc["components"]["schemas"]["Status"]
    assert set(schema["required"]) <= served <= set(schema["properties"])
    assert schema["properties"]["max_key_count"]["example"] == etsi.KmeLimits().max_key_count
    assert set(doc["components"]["schemas"]["KeyRequest"]["properties"]) == {
        "number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional"}
