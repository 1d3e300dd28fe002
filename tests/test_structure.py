"""The package's architecture, checked: the layers import downwards only.

pylaf/ is layered (README "Repository layout"): the emulator API at the top
of the package, experiments/ above it, the live host (live/) and traces
(trace/) beside them, the reference model (reference/) on its own, and the
command line (cli/) on top of everything.  These tests read every module's
imports with :mod:`ast` (no import side effects) and fail on a cycle, on a
private name imported from another module, on a cli module imported from
outside cli/, on a live-host import reachable from trace replay, and on a
module that grew past the size limit without saying why at its top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pylaf"
#: a module longer than this says why in its docstring ("longer than 600 lines because ...")
MAX_LINES = 600


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module, names, at_module_level) for every ``pylaf`` import; imports
    under ``if TYPE_CHECKING:`` are left out (they never run)."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, list[str], bool]] = []
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "pylaf":
            out.append((node.module, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "pylaf":
                    out.append((a.name, [], id(node) in top))
    return out


def _resolve(module: str, names: list[str], parents: bool) -> set[str]:
    """The pylaf modules an import statement names (``parents``: also the
    package ``__init__`` modules that importing it runs)."""
    subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
    # ``from pkg import submodule`` names the submodule, not the package's own code
    got = subs | ({module} if module in MODULES and len(subs) < max(len(names), 1) else set())
    if parents:
        parts = module.split(".")
        got |= {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES}
    return got


def _graph(parents: bool, top_only: bool = False) -> dict[str, set[str]]:
    return {m: set().union(*[_resolve(mod, names, parents) for mod, names, top in _imports(p)
                             if top or not top_only]) - {m}
            for m, p in MODULES.items()}


#: explicit imports (the layering); with the package __init__s an import runs (what gets loaded)
GRAPH, LOADS = _graph(parents=False), _graph(parents=True)
#: module-level imports only: a function-local import that breaks a cycle runs after both are loaded
TOP = _graph(parents=False, top_only=True)


def _reach(start: str, graph: dict[str, set[str]] = LOADS) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles() -> None:
    """A package ``__init__`` may re-export its submodules; any other cycle is
    a layering error."""
    cycles = []
    for m in MODULES:
        for dep in TOP[m]:
            if m in _reach(dep, TOP) and not (m.startswith(dep + ".") or dep.startswith(m + ".")):
                cycles.append((m, dep))
    assert not cycles, f"import cycles: {sorted(cycles)}"


def test_no_private_names_across_modules() -> None:
    bad = []
    for m, p in MODULES.items():
        for mod, names, _ in _imports(p):
            bad += [f"{m} imports {mod}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__") and mod != m
                    and mod != "pylaf._ffi" and n != "_ffi"]
    assert not bad, bad


def test_nothing_imports_the_command_line() -> None:
    """pylaf/cli/ is the top layer: one module per subcommand, imported by
    pylaf.cli (the dispatcher) only."""
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps
           if d.startswith("pylaf.cli") and not m.startswith("pylaf.cli") and m != "pylaf.__main__"]
    assert not bad, bad
    tree = ast.parse(MODULES["pylaf.cli"].read_text())
    listed = next(n for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)
                  and ast.unparse(n.target) == "SUBCOMMAND_MODULES")
    subcommands = set(ast.literal_eval(listed.value))  # type: ignore[arg-type]
    assert subcommands and subcommands <= set(MODULES)
    bad = [f"{m} -> {d}" for m in subcommands for d in GRAPH[m] if d in subcommands]
    assert not bad, f"a subcommand borrows from another: {bad}"
    # shared command-line helpers (pylaf.cli.output ...) are for the subcommands only
    helpers = {m for m in MODULES if m.startswith("pylaf.cli.")} - subcommands
    bad = [f"{m} -> {d}" for m in helpers for d in GRAPH[m] if d in subcommands]
    assert not bad, bad


@pytest.mark.parametrize("module", ["pylaf", "pylaf.trace.replay", "pylaf.trace.format",
                                    "pylaf.reference"])
def test_emulator_side_never_reaches_the_live_host(module: str) -> None:
    """Replaying a trace or using the emulator must not touch /sys or /proc:
    pylaf.live is reachable only from experiments, trace record/validate and
    the command line."""
    assert not {d for d in _reach(module) if d.startswith("pylaf.live")}, module


def test_reference_model_stays_independent_of_the_c_core_logic() -> None:
    """The reference model may use pylaf's value types and error classes, not
    the C-backed AddressSpace internals, the policy resolution or geometry."""
    allowed = {"pylaf", "pylaf._ffi", "pylaf.errors", "pylaf.records", "pylaf.config", "pylaf.policy",
               "pylaf.sizes", "pylaf.stats", "pylaf.arguments", "pylaf.address_space"}
    bad = {d for m in MODULES if m.startswith("pylaf.reference")
           for d in GRAPH[m] if not d.startswith("pylaf.reference") and d not in allowed}
    assert not bad, bad
    for m, p in MODULES.items():
        if not m.startswith("pylaf.reference"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"per_size_states", "resolve", "fill_c", "geometry"}, \
                    f"{m}:{node.lineno} uses .{node.attr}"
            if isinstance(node, (ast.Name, ast.alias)):
                assert getattr(node, "id", getattr(node, "name", "")) != "Geometry", \
                    f"{m} uses pylaf.geometry.Geometry"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "longer than 600 lines because" in doc.lower(), \
            f"{path.relative_to(PKG.parent)} has {lines} lines and no reason at its top"
