"""The import graph of the project, read from the source with ``ast``: no module is imported.

The project's modules are ``fastnet.*`` and ``fastnet.kernels.*``, whose files live in the
top-level ``kernels/`` folder. An edge A → B means that loading A runs an import of B:

* ``import a.b`` is an edge to a.b; ``from a import n`` an edge to a.n when that is a module,
  else to a; relative imports are resolved against A's package.
* Importing a.b.c first runs the packages above it (a.b's ``__init__``), so those are edges too,
  except a package that contains A: its ``__init__`` is already running when A loads. (An
  explicit ``from . import name`` of A's own package is an edge: it needs that ``__init__`` to
  have reached ``name``.)
* Only module-level imports are edges (in class bodies, ``if``, ``try`` and ``with`` blocks
  included). An import inside a function runs when the function is called, after every module
  has loaded, so it cannot close a cycle; one under ``if TYPE_CHECKING:`` never runs.

The layering rules checked on top of "no cycle": no star imports; no module of ``kernels/``
imports a sibling family (only ``_``-prefixed helpers and third-party libraries) or anything of
``fastnet``; ``fastnet/nn`` never imports ``fastnet.kernels`` (nn knows nothing of kernels);
``fastnet/functional`` holds each op once, in modules with an explicit ``__all__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = "fastnet.kernels"


def _module_name(path: Path, folder: Path, package: str) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def project_modules() -> dict[str, Path]:
    """Every module of the project by its dotted name, packages by their ``__init__.py``."""
    modules = {}
    for folder, package in ((ROOT / "fastnet", "fastnet"), (ROOT / "kernels", KERNELS)):
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" not in path.parts:
                modules[_module_name(path, folder, package)] = path
    return modules


MODULES = project_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(nodes: list[ast.AST], module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements among ``nodes`` and their children; with ``module_level``, only
    those that run when the module loads (not in a function, not under ``if TYPE_CHECKING:``)."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif module_level and isinstance(node, ast.If) and _is_type_checking(node):
            yield from import_nodes(node.orelse, module_level)
        else:
            # statements nest in statements, except clauses and match cases, never in expressions
            children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.expr)]
            yield from import_nodes(children, module_level)


def _base(module: str, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    return ".".join(parts[: len(parts) - (level - 1)])


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute names an import statement in ``module`` loads: ``a.n`` for ``from a import
    n`` when that is a project module, else ``a``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = node.module or ""
    if node.level:
        source = ".".join(filter(None, [_base(module, node.level), source]))
    names = []
    for alias in node.names:
        candidate = f"{source}.{alias.name}"
        names.append(candidate if candidate in MODULES else source)
    return names


def _project_module(name: str) -> str | None:
    """``name``, or the longest prefix of it that is a project module; None outside the project."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))


def import_graph() -> dict[str, set[str]]:
    """module → the project modules its loading imports (see the module docstring)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges = graph.setdefault(module, set())
        for node in import_nodes(_parse(module).body, module_level=True):
            for name in imported_names(module, node):
                target = _project_module(name)
                if target is None:
                    continue
                if target != module:
                    edges.add(target)
                parts = target.split(".")
                for end in range(1, len(parts)):  # the packages above the target
                    package = ".".join(parts[:end])
                    if not (module + ".").startswith(package + "."):
                        edges.add(package)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, three colours)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _all_imports(prefix: str) -> Iterator[tuple[str, ast.Import | ast.ImportFrom, list[str]]]:
    """(module, statement, absolute names) for every import, in functions too, of the modules
    named ``prefix`` or under it."""
    for module in MODULES:
        if module == prefix or module.startswith(prefix + "."):
            for node in import_nodes(_parse(module).body, module_level=False):
                yield module, node, imported_names(module, node)


def _where(module: str, node: ast.AST) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{node.lineno}"


# ===================================================================== the tests
def test_the_graph_sees_the_project():
    assert {"fastnet", "fastnet.tensor", "fastnet.functional", f"{KERNELS}._cpu"} <= set(MODULES)
    graph = import_graph()
    assert "fastnet.tensor" in graph["fastnet"]
    assert f"{KERNELS}._cpu" in graph["fastnet.backend"]
    # the relative `from .. import functional` of fastnet.nn reaches the package
    assert "fastnet.functional" in graph["fastnet.nn"]


def test_find_cycle_reports_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_star_imports():
    stars = [
        _where(module, node)
        for module, node, _ in _all_imports("fastnet")
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)
    ]
    assert not stars, f"star imports: {stars}"


def test_kernels_import_only_helpers_and_third_party():
    bad = set()
    for module, node, names in _all_imports(KERNELS):
        absolute_fastnet = isinstance(node, ast.Import) or not node.level
        for name in names:
            inside = name == KERNELS or name.startswith(KERNELS + ".")
            if name.split(".")[0] == "fastnet" and (absolute_fastnet or not inside):
                bad.add(f"{_where(module, node)} imports {name} (kernels never import fastnet)")
            elif inside and name != module and not name.rpartition(".")[2].startswith("_"):
                bad.add(f"{_where(module, node)} imports {name} (a sibling, not a _helper)")
    assert not bad, "\n".join(sorted(bad))


def test_nn_does_not_import_kernels():
    bad = [
        f"{_where(module, node)} imports {name}"
        for module, node, names in _all_imports("fastnet.nn")
        for name in names
        if name == KERNELS or name.startswith(KERNELS + ".")
    ]
    assert not bad, "nn knows nothing of kernels:\n" + "\n".join(bad)


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return None


def test_functional_modules_declare_each_public_name_once():
    defined: dict[str, str] = {}
    duplicates = []
    for module in MODULES:
        if not module.startswith("fastnet.functional"):
            continue
        tree = _parse(module)
        exported = _declared_all(tree)
        assert exported is not None, f"{module} has no __all__"
        assert not [n for n in exported if n.startswith("_")], f"{module} exports private names"
        if module == "fastnet.functional":
            continue
        for node in tree.body:
            names = (
                [node.name]
                if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                else [t.id for t in node.targets if isinstance(t, ast.Name)]
                if isinstance(node, ast.Assign)
                else []
            )
            for name in names:
                if name.startswith("_"):
                    continue
                if name in defined:
                    duplicates.append(f"{name} in {defined[name]} and {module}")
                defined.setdefault(name, module)
    assert not duplicates, f"defined twice: {duplicates}"


def test_no_module_of_the_package_is_over_600_lines():
    """One concern a module: a file that grows past this is doing several things."""
    long = {
        str(path.relative_to(ROOT)): count
        for path in sorted((ROOT / "fastnet").rglob("*.py"))
        if (count := len(path.read_text().splitlines())) > 600
    }
    assert not long, long
