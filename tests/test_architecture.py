"""The import graph of src/ keeps the shape docs/architecture.md draws: no cycles, layers only import
downwards, the agent never imports the server or the prober, and what ships in the QPKG needs nothing but
the standard library, requests, schedule and defusedxml.

Imports are read with ``ast``: module-level and function-level imports count (a function-level import
is still a dependency, only a later one); imports under ``if TYPE_CHECKING:`` do not (they never run).
Importing ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__`` and counts as importing it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("exposure_guard", "exposure_guard_server", "exposure_guard_prober")
# The agent's three dependencies, plus what requests itself requires (the QPKG vendors those with it; the
# UPnP transport uses urllib3's connection pools directly for its per-request deadlines).
QPKG_THIRD_PARTY = {"requests", "schedule", "defusedxml", "urllib3", "certifi", "idna", "charset_normalizer"}

# Standard-library modules of other Pythons than the one running this test (the agent runs on 3.8 to 3.13+;
# the built-in SHA-256 module is _sha256 up to 3.11 and _sha2 from 3.12 on).
OTHER_VERSIONS_STDLIB = {"__future__", "_sha2", "_sha256"}

# The agent's layers, lowest first. A module may import its own layer and lower ones; layers that share a
# rank are peers that must not import each other (the protocol layer knows nothing of the NAS).
AGENT_LAYERS: List[Tuple[int, str, Tuple[str, ...]]] = [
    (0, "foundation", ("exposure_guard", "exposure_guard.errors", "exposure_guard.atomicio", "exposure_guard.netif",
                       "exposure_guard.contracts")),
    (1, "protocol", ("exposure_guard.upnp", "exposure_guard.probeclient", "exposure_guard.hostilehttp")),
    (1, "nas", ("exposure_guard.qts",)),
    (2, "model", ("exposure_guard.settings", "exposure_guard.report")),
    (3, "facts", ("exposure_guard.facts",)),
    (4, "context", ("exposure_guard.context",)),
    (5, "fixes", ("exposure_guard.fixes",)),
    (6, "checks", ("exposure_guard.checks",)),
    (7, "core", ("exposure_guard.core", "exposure_guard.render", "exposure_guard.checkin", "exposure_guard.spool")),
    (8, "commands", ("exposure_guard.cli", "exposure_guard.cliparser", "exposure_guard.daemon", "exposure_guard.__main__",
                     "exposure_guard.web")),
    (8, "packaging", ("exposure_guard.packaging", "exposure_guard.qpkg_inspect")),
]
# What the server and the prober may use of the agent package: the shared contracts and the report model.
SHARED_WITH_SERVICES = ("exposure_guard", "exposure_guard.contracts", "exposure_guard.report")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.AST, module: str, is_package: bool) -> Set[str]:
    """Absolute names imported at run time (``from a import b`` gives ``a`` and ``a.b``)."""
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update("%s.%s" % (base, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def build_graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (SRC / pkg).rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        names = runtime_imports(ast.parse(path.read_text("utf-8")), name, path.name == "__init__.py")
        edges: Set[str] = set()
        for imported in names:
            if imported.split(".")[0] not in PACKAGES:
                edges.add(imported)
                continue
            # `from pkg import name` names a module only when that module exists
            target = imported if imported in files else imported.rsplit(".", 1)[0] if "." in imported else imported
            if target not in files:
                continue
            edges.add(target)
            parts = target.split(".")
            for i in range(1, len(parts)):  # parent packages run first, unless the importer is inside them
                parent = ".".join(parts[:i])
                if parent in files and not (name == parent or name.startswith(parent + ".")):
                    edges.add(parent)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def strong(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in graph:
                continue
            if succ not in index:
                strong(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in sorted(graph):
        if node not in index:
            strong(node)
    return out


def layer_of(module: str) -> Optional[Tuple[int, str]]:
    best: Optional[Tuple[int, str, int]] = None
    for rank, name, prefixes in AGENT_LAYERS:
        for prefix in prefixes:
            # the package root stands for its own __init__ only, not for everything below it
            inside = module == prefix or (module.startswith(prefix + ".") and prefix != "exposure_guard")
            if inside and (best is None or len(prefix) > best[2]):
                best = (rank, name, len(prefix))
    return (best[0], best[1]) if best else None


def layer_violations(graph: Dict[str, Set[str]]) -> List[str]:
    out = []
    for module, edges in sorted(graph.items()):
        if not module.startswith("exposure_guard.") and module != "exposure_guard":
            continue
        mine = layer_of(module)
        if mine is None:
            out.append("%s belongs to no layer: add it to AGENT_LAYERS (and docs/architecture.md)" % module)
            continue
        for target in sorted(edges):
            theirs = layer_of(target) if target.split(".")[0] == "exposure_guard" else None
            if theirs is None:
                continue
            if theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                out.append("%s (%s) imports %s (%s)" % (module, mine[1], target, theirs[1]))
    return out


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    return build_graph()


def _edges(graph: Dict[str, Set[str]], sources: Iterable[str]) -> Iterable[Tuple[str, str]]:
    for module in sources:
        for target in sorted(graph[module]):
            yield module, target


def test_no_import_cycles(graph):
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_agent_layers_import_only_downwards(graph):
    assert layer_violations(graph) == []


def test_registry_is_a_leaf(graph):
    ours = {t for t in graph["exposure_guard.checks.registry"] if t.startswith("exposure_guard")}
    assert ours <= {"exposure_guard.errors", "exposure_guard.contracts"}, ours


def test_fixes_import_no_check(graph):
    bad = [(m, t) for m, t in _edges(graph, [m for m in graph if m.startswith("exposure_guard.fixes")])
           if t.startswith("exposure_guard.checks")]
    assert bad == []


def test_contracts_import_nothing_else_of_the_agent(graph):
    bad = [(m, t) for m, t in _edges(graph, [m for m in graph if m.startswith("exposure_guard.contracts")])
           if t.startswith("exposure_guard") and not t.startswith("exposure_guard.contracts")]
    assert bad == []


def test_agent_never_imports_server_or_prober(graph):
    bad = [(m, t) for m, t in _edges(graph, [m for m in graph if m.split(".")[0] == "exposure_guard"])
           if t.split(".")[0] in ("exposure_guard_server", "exposure_guard_prober")]
    assert bad == []


def test_server_and_prober_use_only_the_shared_contracts_of_the_agent(graph):
    bad = []
    for module, target in _edges(graph, [m for m in graph if m.split(".")[0] != "exposure_guard"]):
        top = target.split(".")[0]
        if top == "exposure_guard" and not any(target == s or target.startswith(s + ".") for s in SHARED_WITH_SERVICES):
            bad.append((module, target))
        if {module.split(".")[0], top} == {"exposure_guard_server", "exposure_guard_prober"}:
            bad.append((module, target))
    assert bad == []


def test_qpkg_modules_need_only_stdlib_requests_schedule_defusedxml(graph):
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        pytest.skip("sys.stdlib_module_names needs Python 3.10+ (this suite's main run is on 3.11)")
    bad = []
    for module, target in _edges(graph, [m for m in graph if m.split(".")[0] == "exposure_guard"]):
        top = target.split(".")[0]
        if top in PACKAGES or top in stdlib or top in OTHER_VERSIONS_STDLIB or top in QPKG_THIRD_PARTY:
            continue
        bad.append((module, target))
    assert bad == [], "the QPKG ships only the standard library, requests (with its dependencies), schedule and " \
        "defusedxml"


# ---- the checker itself must be able to fail
def test_cycle_and_layer_detectors_catch_what_they_should():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    bad = layer_violations({"exposure_guard.upnp.ssdp": {"exposure_guard.qts.identity"},
                            "exposure_guard.qts.config": {"exposure_guard.checks.runner"},
                            "exposure_guard.checks.runner": {"exposure_guard.context"}})
    assert layer_violations({"exposure_guard.newthing": set()}) == [
        "exposure_guard.newthing belongs to no layer: add it to AGENT_LAYERS (and docs/architecture.md)"]
    assert bad == ["exposure_guard.qts.config (nas) imports exposure_guard.checks.runner (checks)",
                   "exposure_guard.upnp.ssdp (protocol) imports exposure_guard.qts.identity (nas)"]


def test_type_checking_imports_do_not_count_but_function_level_ones_do():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.hidden\n"
                     "def f():\n    import y.lazy\n")
    assert runtime_imports(tree, "m", False) == {"typing", "typing.TYPE_CHECKING", "y.lazy"}
