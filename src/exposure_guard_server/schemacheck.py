"""A fast validator generated from a JSON Schema (the subset of keywords report-v1.schema.json uses).

jsonschema stays the authority: a document this validator rejects is re-checked by jsonschema, which
also words the error; the check-in path uses this one because jsonschema costs ~1 ms per report, most
of a check-in's CPU. The schema is turned into one Python function (straight-line checks and loops, no
per-keyword calls). A schema with any keyword outside ``SUPPORTED`` is refused at compile time
(``Unsupported``) and the caller falls back to jsonschema alone. tests/server/test_schemacheck.py
compares both on valid and mutated documents."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List

Check = Callable[[Any], bool]
SUPPORTED = {"$schema", "$id", "title", "description", "type", "required", "properties", "const", "enum", "pattern",
             "minLength", "maxLength", "minItems", "maxItems", "items", "minimum", "maximum", "format",
             "additionalProperties"}
_MISSING = object()


class Unsupported(Exception):
    pass


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


_TYPE_TEST = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "integer": "_is_integer({v})",
    "number": "_is_number({v})",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
}


class _Generator:
    def __init__(self) -> None:
        self.lines: List[str] = []
        self.consts: Dict[str, Any] = {}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return "%s%d" % (prefix, self.counter)

    def const(self, value: Any, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.consts[name] = value
        return name

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def node(self, schema: Any, var: str, indent: int) -> None:
        if schema is True:
            return
        if schema is False:
            self.emit(indent, "return False")
            return
        if not isinstance(schema, dict):
            raise Unsupported("schema must be an object or a boolean")
        unknown = set(schema) - SUPPORTED
        if unknown:
            raise Unsupported("keywords not supported: %s" % ", ".join(sorted(unknown)))
        known_type = ""
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if any(n not in _TYPE_TEST for n in names):
                raise Unsupported("unknown type in %r" % names)
            self.emit(indent, "if not (%s): return False" % " or ".join(_TYPE_TEST[n].format(v=var) for n in names))
            if len(names) == 1:
                known_type = names[0]

        def guard(kind: str) -> str:
            """Condition under which a type-specific keyword applies ('' when the type is already known)."""
            if known_type == kind or (kind == "number" and known_type == "integer"):
                return ""
            return _TYPE_TEST[kind].format(v=var)

        def emit_checked(kind: str, failing: str) -> None:
            cond = guard(kind)
            self.emit(indent, "if %s(%s): return False" % ((cond + " and ") if cond else "", failing))

        if "const" in schema:
            self.emit(indent, "if not _json_equal(%s, %s): return False" % (var, self.const(schema["const"])))
        if "enum" in schema:
            options = list(schema["enum"])
            if all(isinstance(o, str) for o in options):
                self.emit(indent, "if not (isinstance(%s, str) and %s in %s): return False" % (
                    var, var, self.const(frozenset(options))))
            else:
                self.emit(indent, "if not any(_json_equal(%s, o) for o in %s): return False" % (
                    var, self.const(options)))
        if "pattern" in schema:
            search = self.const(re.compile(schema["pattern"]).search, "re")
            emit_checked("string", "%s(%s) is None" % (search, var))
        if "minLength" in schema:
            emit_checked("string", "len(%s) < %d" % (var, schema["minLength"]))
        if "maxLength" in schema:
            emit_checked("string", "len(%s) > %d" % (var, schema["maxLength"]))
        if "minItems" in schema:
            emit_checked("array", "len(%s) < %d" % (var, schema["minItems"]))
        if "maxItems" in schema:
            emit_checked("array", "len(%s) > %d" % (var, schema["maxItems"]))
        if "minimum" in schema:
            emit_checked("number", "%s < %s" % (var, self.const(schema["minimum"])))
        if "maximum" in schema:
            emit_checked("number", "%s > %s" % (var, self.const(schema["maximum"])))
        if "required" in schema:
            for key in schema["required"]:
                emit_checked("object", "%r not in %s" % (key, var))
        if "items" in schema and schema["items"] is not True:
            item = self.name("i")
            cond = guard("array")
            inner = indent
            if cond:
                self.emit(indent, "if %s:" % cond)
                inner += 1
            self.emit(inner, "for %s in %s:" % (item, var))
            self.node(schema["items"], item, inner + 1)
        if "properties" in schema or "additionalProperties" in schema:
            cond = guard("object")
            inner = indent
            if cond:
                self.emit(indent, "if %s:" % cond)
                inner += 1
            for key, sub in schema.get("properties", {}).items():
                value = self.name("p")
                self.emit(inner, "%s = %s.get(%r, _MISSING)" % (value, var, key))
                self.emit(inner, "if %s is not _MISSING:" % value)
                before = len(self.lines)
                self.node(sub, value, inner + 1)
                if len(self.lines) == before:
                    self.emit(inner + 1, "pass")
            if "additionalProperties" in schema and schema["additionalProperties"] is not True:
                known = self.const(frozenset(schema.get("properties", {})))
                name, value = self.name("k"), self.name("x")
                self.emit(inner, "for %s, %s in %s.items():" % (name, value, var))
                self.emit(inner + 1, "if %s not in %s:" % (name, known))
                before = len(self.lines)
                self.node(schema["additionalProperties"], value, inner + 2)
                if len(self.lines) == before:
                    self.emit(inner + 2, "pass")
        # "format" is an annotation in draft 2020-12 (jsonschema does not assert it by default either).


def compile_schema(schema: Any) -> Check:
    gen = _Generator()
    gen.emit(0, "def check(doc):")
    gen.node(schema, "doc", 1)
    gen.emit(1, "return True")
    namespace: Dict[str, Any] = {"_is_integer": _is_integer, "_is_number": _is_number, "_json_equal": _json_equal,
                                 "_MISSING": _MISSING}
    namespace.update(gen.consts)
    exec(compile("\n".join(gen.lines), "<schemacheck>", "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace["check"]
