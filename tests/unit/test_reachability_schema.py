"""The agent's own answer validation (it cannot ship jsonschema) agrees with prober-v1.schema.json."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from exposure_guard.probeclient import SCHEMA_FILE, ProberError, validate_answer

NONCE = "0123456789abcdef0123456789abcdef"
SAMPLE = {
    "schema": "exposure-guard/prober/v1", "nonce": NONCE, "observed_address": "198.51.100.1", "family": "ipv4",
    "via_proxy": False, "lab_mode": True, "duration_ms": 41, "prober_version": "1.0.0", "ignored_fields": [],
    "ports": [
        {"port": 443, "state": "open", "connect_ms": 0.4, "banner": None, "error": None,
         "tls": {"sha256": "ab" * 32, "error": None},
         "http": {"status": 302, "server": "http server 2.0", "location": "/cgi-bin/", "title": ""}},
        {"port": 22, "state": "open", "connect_ms": 0.3, "tls": None, "http": None, "error": None,
         "banner": "SSH-2.0-OpenSSH_8.0"},
        {"port": 8080, "state": "filtered", "connect_ms": None, "tls": None, "http": None, "banner": None,
         "error": "no answer within 3.0 s"},
    ],
    "upnp": {"exposed": False, "error": None, "ssdp": {"answered": False, "port": 1900},
             "igd": {"found": False, "tried": ["5000/rootDesc.xml"]}},
}
ASKED = [443, 22, 8080]


def schema_accepts(document) -> bool:
    schema = json.loads(SCHEMA_FILE.read_text())
    try:
        jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError:
        return False
    return True


def agent_accepts(document) -> bool:
    try:
        validate_answer(document, NONCE, ASKED)
    except ProberError:
        return False
    return True


def test_sample_is_valid_for_both():
    assert schema_accepts(SAMPLE) and agent_accepts(SAMPLE)
    answer = validate_answer(copy.deepcopy(SAMPLE), NONCE, ASKED, "ipv4")
    assert answer.ports[443]["tls"]["sha256"] == "ab" * 32 and answer.observed_address == "198.51.100.1"


def _set(path, value):
    def mutate(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return mutate


MUTATIONS = {
    "wrong schema id": _set(["schema"], "exposure-guard/prober/v2"),
    "no nonce": _set(["nonce"], KeyError),
    "address not an IP": _set(["observed_address"], "example.com"),
    "negative duration": _set(["duration_ms"], -1),
    "duration string": _set(["duration_ms"], "41"),
    "via_proxy not bool": _set(["via_proxy"], "no"),
    "ports not a list": _set(["ports"], {"443": "open"}),
    "unknown state": _set(["ports", 0, "state"], "maybe"),
    "port zero": _set(["ports", 0, "port"], 0),
    "port bool": _set(["ports", 0, "port"], True),
    "bad sha256": _set(["ports", 0, "tls", "sha256"], "XYZ"),
    "sha256 upper case": _set(["ports", 0, "tls", "sha256"], "AB" * 32),
    "http status text": _set(["ports", 0, "http", "status"], "200"),
    "http status 42": _set(["ports", 0, "http", "status"], 42),
    "http missing title": _set(["ports", 0, "http", "title"], KeyError),
    "huge banner": _set(["ports", 1, "banner"], "x" * 5000),
    "banner number": _set(["ports", 1, "banner"], 7),
    "tls not object": _set(["ports", 0, "tls"], "yes"),
    "upnp exposed not bool": _set(["upnp", "exposed"], "true"),
    "17 ports": _set(["ports"], [dict(SAMPLE["ports"][2], port=p) for p in range(1, 18)]),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_both_reject(name):
    document = copy.deepcopy(SAMPLE)
    MUTATIONS[name](document)
    assert not schema_accepts(document), name
    assert not agent_accepts(document), name


def test_agent_also_checks_the_request_it_made():
    assert not agent_accepts(dict(copy.deepcopy(SAMPLE), nonce="f" * 32))  # schema-valid, but not our answer
    assert not agent_accepts(dict(copy.deepcopy(SAMPLE), family="ipv6"))  # contradicts observed_address
    with pytest.raises(ProberError, match="no result for port"):
        validate_answer(copy.deepcopy(SAMPLE), NONCE, ASKED + [21])
    with pytest.raises(ProberError, match="saw an ipv4 address"):
        validate_answer(copy.deepcopy(SAMPLE), NONCE, ASKED, "ipv6")


def test_validated_text_is_cleaned():
    document = copy.deepcopy(SAMPLE)
    document["ports"][1]["banner"] = "SSH-2.0\x1b[31mred\x00"
    answer = validate_answer(document, NONCE, ASKED)
    assert "\x1b" not in answer.ports[22]["banner"] and "\x00" not in answer.ports[22]["banner"]


def test_compiled_schema_agrees_with_jsonschema_on_the_whole_contract():
    """The shared compiler handles the prober schema's $ref/$defs/oneOf: plain and explaining modes give
    jsonschema's verdict on answers, refusals and health documents, valid or mutated."""
    from exposure_guard.contracts.schemacheck import compile_explaining, compile_schema

    schema = json.loads(SCHEMA_FILE.read_text())
    plain, explaining = compile_schema(schema), compile_explaining(schema)
    refusal = {"schema": "exposure-guard/prober/v1", "error": {"code": "rate_limited", "message": "slow down"}}
    documents = [copy.deepcopy(SAMPLE), refusal, {"schema": "exposure-guard/prober/v1"}, [], None, "x"]
    for mutate in MUTATIONS.values():
        document = copy.deepcopy(SAMPLE)
        mutate(document)
        documents.append(document)
    for document in documents:
        expected = schema_accepts(document)
        assert plain(document) is expected, document
        assert (explaining(document) is None) is expected, document


def test_the_reason_names_the_field():
    document = copy.deepcopy(SAMPLE)
    document["ports"][0]["state"] = "maybe"
    with pytest.raises(ProberError, match=r"ports\[\]\.state: not one of open, closed, filtered"):
        validate_answer(document, NONCE, ASKED)
    del document["ports"][0]["state"]
    with pytest.raises(ProberError, match=r"ports\[\]: state is missing"):
        validate_answer(document, NONCE, ASKED)
