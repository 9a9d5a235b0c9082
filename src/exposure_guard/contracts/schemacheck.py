"""A fast validator generated from a JSON Schema (the subset of keywords the report and prober schemas use).

jsonschema stays the authority: a document this validator rejects is re-checked by jsonschema, which
also words the error; the check-in path uses this one because jsonschema costs ~1 ms per report, most
of a check-in's CPU. The schema is turned into one Python function (straight-line checks and loops, no
per-keyword calls). A schema with any keyword outside ``SUPPORTED`` is refused at compile time
(``Unsupported``) and the caller falls back to jsonschema alone. The agent, which cannot ship jsonschema,
checks the prober's answers with it too (``compile_explaining`` names what failed).
tests/server/test_schemacheck.py and tests/unit/test_reachability_schema.py compare it with jsonschema on
valid and mutated documents."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional

Check = Callable[[Any], bool]
SUPPORTED = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "required", "properties", "const", "enum",
             "pattern", "minLength", "maxLength", "minItems", "maxItems", "items", "minimum", "maximum", "format",
             "additionalProperties", "oneOf", "anyOf"}
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
    """Writes the checking function. Plain mode: ``return False`` on the first failure, ``True`` at the
    end (the server's hot path). Explain mode: returns a message naming the path and the rule that
    failed (``ports[].state: not one of ...``), ``None`` when valid."""

    def __init__(self, root: Any, explain: bool) -> None:
        self.root = root
        self.explain = explain
        self.lines: List[str] = []
        self.functions: List[str] = []  # helper functions for $ref / oneOf / anyOf branches
        self.compiled: Dict[int, str] = {}  # id(subschema) -> its function's name
        self.consts: Dict[str, Any] = {}
        self.counter = 0
        self.ok = "None" if explain else "True"

    def function(self, schema: Any) -> str:
        """The name of a function checking ``schema`` (generated once per subschema object)."""
        if id(schema) in self.compiled:
            return self.compiled[id(schema)]
        name = self.name("f")
        self.compiled[id(schema)] = name  # before the body: a recursive $ref calls itself
        outer, self.lines = self.lines, []
        self.emit(0, "def %s(v):" % name)
        self.node(schema, "v", 1, "")
        self.emit(1, "return %s" % self.ok)
        self.functions.extend(self.lines)
        self.lines = outer
        return name

    def resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported("only local $ref (#/...) is supported, not %r" % (ref,))
        target = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise Unsupported("$ref %s points at nothing" % ref)
            target = target[part]
        return target

    def name(self, prefix: str) -> str:
        self.counter += 1
        return "%s%d" % (prefix, self.counter)

    def const(self, value: Any, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.consts[name] = value
        return name

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def fail_if(self, indent: int, condition: str, path: str, why: str) -> None:
        if self.explain:
            self.emit(indent, "if %s: return %r" % (condition, "%s: %s" % (path, why)))
        else:
            self.emit(indent, "if %s: return False" % condition)

    def call_fails(self, function: str, var: str) -> str:
        return ("%s(%s) is not None" if self.explain else "not %s(%s)") % (function, var)

    def call_ok(self, function: str, var: str) -> str:
        return ("(%s(%s) is None)" if self.explain else "%s(%s)") % (function, var)

    def node(self, schema: Any, var: str, indent: int, path: str) -> None:
        if schema is True:
            return
        if schema is False:
            self.fail_if(indent, "True", path, "not allowed")
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
            self.fail_if(indent, "not (%s)" % " or ".join(_TYPE_TEST[n].format(v=var) for n in names), path,
                         "not of type %s" % " or ".join(names))
            if len(names) == 1:
                known_type = names[0]

        def guard(kind: str) -> str:
            """Condition under which a type-specific keyword applies ('' when the type is already known)."""
            if known_type == kind or (kind == "number" and known_type == "integer"):
                return ""
            return _TYPE_TEST[kind].format(v=var)

        def checked(kind: str, failing: str, why: str) -> None:
            cond = guard(kind)
            self.fail_if(indent, "%s(%s)" % ((cond + " and ") if cond else "", failing), path, why)

        if "$ref" in schema:
            function = self.function(self.resolve(schema["$ref"]))
            if self.explain:
                found = self.name("m")
                self.emit(indent, "%s = %s(%s)" % (found, function, var))
                self.emit(indent, "if %s is not None: return _join(%r, %s)" % (found, path, found))
            else:
                self.emit(indent, "if not %s(%s): return False" % (function, var))
        for keyword in ("oneOf", "anyOf"):
            if keyword in schema:
                calls = [self.call_ok(self.function(branch), var) for branch in schema[keyword]]
                if keyword == "oneOf":
                    self.fail_if(indent, "(%s) != 1" % " + ".join(calls), path,
                                 "matches none or several of its %d alternatives" % len(calls))
                else:
                    self.fail_if(indent, "not (%s)" % " or ".join(calls), path,
                                 "matches none of its %d alternatives" % len(calls))
        if "const" in schema:
            self.fail_if(indent, "not _json_equal(%s, %s)" % (var, self.const(schema["const"])), path,
                         "must be %r" % (schema["const"],))
        if "enum" in schema:
            options = list(schema["enum"])
            why = "not one of %s" % ", ".join(str(o) for o in options)
            if all(isinstance(o, str) for o in options):
                self.fail_if(indent, "not (isinstance(%s, str) and %s in %s)" % (var, var, self.const(frozenset(options))),
                             path, why)
            else:
                self.fail_if(indent, "not any(_json_equal(%s, o) for o in %s)" % (var, self.const(options)), path, why)
        if "pattern" in schema:
            search = self.const(re.compile(schema["pattern"]).search, "re")
            checked("string", "%s(%s) is None" % (search, var), "does not match %s" % schema["pattern"])
        if "minLength" in schema:
            checked("string", "len(%s) < %d" % (var, schema["minLength"]), "shorter than %d" % schema["minLength"])
        if "maxLength" in schema:
            checked("string", "len(%s) > %d" % (var, schema["maxLength"]), "longer than %d" % schema["maxLength"])
        if "minItems" in schema:
            checked("array", "len(%s) < %d" % (var, schema["minItems"]), "fewer than %d items" % schema["minItems"])
        if "maxItems" in schema:
            checked("array", "len(%s) > %d" % (var, schema["maxItems"]), "more than %d items" % schema["maxItems"])
        if "minimum" in schema:
            checked("number", "%s < %s" % (var, self.const(schema["minimum"])), "below %s" % schema["minimum"])
        if "maximum" in schema:
            checked("number", "%s > %s" % (var, self.const(schema["maximum"])), "above %s" % schema["maximum"])
        if "required" in schema:
            for key in schema["required"]:
                checked("object", "%r not in %s" % (key, var), "%s is missing" % key)
        if "items" in schema and schema["items"] is not True:
            item = self.name("i")
            cond = guard("array")
            inner = indent
            if cond:
                self.emit(indent, "if %s:" % cond)
                inner += 1
            self.emit(inner, "for %s in %s:" % (item, var))
            self.node(schema["items"], item, inner + 1, path + "[]")
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
                self.node(sub, value, inner + 1, (path + "." if path else "") + key)
                if len(self.lines) == before:
                    self.emit(inner + 1, "pass")
            if "additionalProperties" in schema and schema["additionalProperties"] is not True:
                known = self.const(frozenset(schema.get("properties", {})))
                name, value = self.name("k"), self.name("x")
                self.emit(inner, "for %s, %s in %s.items():" % (name, value, var))
                self.emit(inner + 1, "if %s not in %s:" % (name, known))
                before = len(self.lines)
                self.node(schema["additionalProperties"], value, inner + 2, (path + "." if path else "") + "*")
                if len(self.lines) == before:
                    self.emit(inner + 2, "pass")
        # "format" is an annotation in draft 2020-12 (jsonschema does not assert it by default either).


def compile_schema(schema: Any) -> Check:
    """A function: document -> True when ``schema`` accepts it, False otherwise (fast)."""
    return _compile(schema, explain=False)


def compile_explaining(schema: Any) -> Callable[[Any], Optional[str]]:
    """A function: document -> None when ``schema`` accepts it, else the first failing path and rule
    (``ports[].state: not one of open, closed, filtered``)."""
    check = _compile(schema, explain=True)

    def explain(document: Any) -> Optional[str]:
        message = check(document)
        return None if message is None else ("(document)" + message if message.startswith(":") else message)

    return explain


def _join(path: str, message: str) -> str:
    """A message from a $ref'd subschema (relative path) put under the path that referred to it."""
    if not path or message.startswith((":", "[")):
        return path + message
    return path + "." + message


def _compile(schema: Any, explain: bool) -> Any:
    gen = _Generator(schema, explain)
    gen.emit(0, "def check(doc):")
    gen.node(schema, "doc", 1, "")
    gen.emit(1, "return %s" % gen.ok)
    gen.lines = gen.functions + gen.lines
    namespace: Dict[str, Any] = {"_is_integer": _is_integer, "_is_number": _is_number, "_json_equal": _json_equal,
                                 "_MISSING": _MISSING, "_join": _join}
    namespace.update(gen.consts)
    exec(compile("\n".join(gen.lines), "<schemacheck>", "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace["check"]
