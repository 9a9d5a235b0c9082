"""Reports and device identities against report-v1.schema.json: the generated fast check first (it only
says yes or no), jsonschema for the words of the error. The identity's strings go into database text
columns and onto every page, so they must not hold control characters either (NUL cannot even be stored
in PostgreSQL)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import jsonschema

from exposure_guard.contracts.schemacheck import Unsupported, compile_schema
from exposure_guard.report import load_schema
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import CONTROL_CHARACTERS

_SCHEMA = load_schema()
_REPORT_VALIDATOR = jsonschema.Draft202012Validator(_SCHEMA)
_DEVICE_VALIDATOR = jsonschema.Draft202012Validator(_SCHEMA["properties"]["device"])
_IDENTITY_TEXT = ("device_id", "hostname", "model", "model_family", "firmware", "build")

try:
    _FAST_REPORT_CHECK: Optional[Callable[[Any], bool]] = compile_schema(_SCHEMA)
except Unsupported:  # a future schema keyword: jsonschema alone
    _FAST_REPORT_CHECK = None


def _first_error(validator: jsonschema.protocols.Validator, doc: Any) -> Optional[str]:
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(document)"
    return "%s: %s" % (where, error.message[:300])


def validate_report(doc: Dict[str, Any]) -> None:
    """Raise 422 unless ``doc`` matches report-v1.schema.json."""
    if _FAST_REPORT_CHECK is None or not _FAST_REPORT_CHECK(doc):
        problem = _first_error(_REPORT_VALIDATOR, doc)
        if problem:
            raise ApiError(422, "report does not match exposure-guard/report/v1: " + problem)
    problem = _identity_controls(doc["device"])
    if problem:
        raise ApiError(422, "report does not match exposure-guard/report/v1: device/" + problem)


def validate_device(device: Dict[str, Any]) -> None:
    """Raise 422 unless ``device`` is a valid device identity (the report's ``device`` object)."""
    problem = _first_error(_DEVICE_VALIDATOR, device) or _identity_controls(device)
    if problem:
        raise ApiError(422, "device identity is not valid: " + problem)


def _identity_controls(device: Dict[str, Any]) -> Optional[str]:
    """Which identity string holds a control character (None when none does)."""
    for key in _IDENTITY_TEXT:
        value = device.get(key)
        if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
            return "%s: holds a control character" % key
    for index, address in enumerate(device.get("lan_addresses") or []):
        if isinstance(address, str) and CONTROL_CHARACTERS.search(address):
            return "lan_addresses/%d: holds a control character" % index
    return None
