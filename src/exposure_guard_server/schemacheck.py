"""A fast validator compiled from a JSON Schema (the subset of keywords report-v1.schema.json uses).

jsonschema stays the authority: a document this validator rejects is re-checked by jsonschema, which
also words the error; the check-in path uses this one because jsonschema costs ~1 ms per report, which
would be most of a check-in's CPU. A schema with any keyword outside ``SUPPORTED`` is refused at compile
time (``Unsupported``) and the caller falls back to jsonschema alone. tests/server/test_schemacheck.py
compares both on valid and mutated documents."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List

Check = Callable[[Any], bool]
SUPPORTED = {"$schema", "$id", "title", "description", "type", "required", "properties", "const", "enum", "pattern",
             "minLength", "maxLength", "minItems", "maxItems", "items", "minimum", "maximum", "format",
             "additionalProperties"}


class Unsupported(Exception):
    pass


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPES: Dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def compile_schema(schema: Any) -> Check:
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict):
        raise Unsupported("schema must be an object or a boolean")
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise Unsupported("keywords not supported: %s" % ", ".join(sorted(unknown)))
    checks: List[Check] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        tests = [_TYPES[name] for name in names]
        checks.append(lambda v, tests=tests: any(t(v) for t in tests))
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v, c=const: _json_equal(v, c))
    if "enum" in schema:
        options = list(schema["enum"])
        if all(isinstance(o, str) for o in options):
            allowed = frozenset(options)
            checks.append(lambda v, a=allowed: isinstance(v, str) and v in a)
        else:
            checks.append(lambda v, o=options: any(_json_equal(v, x) for x in o))
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda v, s=search: not isinstance(v, str) or s(v) is not None)
    if "minLength" in schema:
        checks.append(lambda v, n=schema["minLength"]: not isinstance(v, str) or len(v) >= n)
    if "maxLength" in schema:
        checks.append(lambda v, n=schema["maxLength"]: not isinstance(v, str) or len(v) <= n)
    if "minItems" in schema:
        checks.append(lambda v, n=schema["minItems"]: not isinstance(v, list) or len(v) >= n)
    if "maxItems" in schema:
        checks.append(lambda v, n=schema["maxItems"]: not isinstance(v, list) or len(v) <= n)
    if "minimum" in schema:
        checks.append(lambda v, n=schema["minimum"]: not _TYPES["number"](v) or v >= n)
    if "maximum" in schema:
        checks.append(lambda v, n=schema["maximum"]: not _TYPES["number"](v) or v <= n)
    if "items" in schema:
        item = compile_schema(schema["items"])
        checks.append(lambda v, item=item: not isinstance(v, list) or all(item(x) for x in v))
    if "required" in schema:
        required = list(schema["required"])
        checks.append(lambda v, r=required: not isinstance(v, dict) or all(k in v for k in r))
    if "properties" in schema:
        props = [(name, compile_schema(sub)) for name, sub in schema["properties"].items()]
        checks.append(lambda v, p=props: not isinstance(v, dict) or all(c(v[k]) for k, c in p if k in v))
    if "additionalProperties" in schema:
        extra = compile_schema(schema["additionalProperties"])
        known = frozenset(schema.get("properties", {}))
        checks.append(lambda v, e=extra, k=known: not isinstance(v, dict) or all(e(x) for n, x in v.items()
                                                                               if n not in k))
    # "format" is an annotation in draft 2020-12 (jsonschema does not assert it by default either).

    def check(value: Any, checks: List[Check] = checks) -> bool:
        for test in checks:  # noqa: SIM110 - a plain loop is the fastest here
            if not test(value):
                return False
        return True

    return check
