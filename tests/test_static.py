"""Static checks of the package, run by the README's test command.

- the import layers of pyproject's ``[tool.importlinter]`` hold (import-linter);
- no import cycle between any two modules of the package (function-level and
  ``TYPE_CHECKING`` imports included);
- mypy, configured in pyproject's ``[tool.mypy]``, is clean on python/axn_fast;
- ``python/axn_fast/_core.pyi`` matches the built extension (mypy's stubtest);
- the version is written once and the package, the extension and the build agree;
- ``py.typed`` ships with the package and the lazy public names are visible to type checkers.

The tools come with the ``dev`` extra (``pip install .[dev]``, included in ``.[all]``).
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Dict, List, Sequence, Set

import pytest

import axn_fast

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "python" / "axn_fast"


def _run(args: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------- import layers and cycles

def test_import_contracts_hold() -> None:
    pytest.importorskip("importlinter", reason="the dev extra installs import-linter")
    proc = _run(["-c", "import sys; from importlinter.cli import lint_imports; "
                       "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"])
    assert proc.returncode == 0, f"import contracts broken:\n{proc.stdout}\n{proc.stderr}"


def _strongly_connected_components(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's algorithm, iterative (no recursion limit): every SCC of the directed graph."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    components: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_strongly_connected_components_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set(), "g": {"g"}}
    comps = sorted(_strongly_connected_components(graph))
    assert comps == [["a", "b", "c"], ["d", "e"], ["f"], ["g"]]


def test_no_import_cycles() -> None:
    grimp = pytest.importorskip("grimp", reason="the dev extra installs import-linter (and grimp)")
    graph = grimp.build_graph("axn_fast", cache_dir=None)  # every import, function-level ones too
    edges = {m: set(graph.find_modules_directly_imported_by(m)) - {m} for m in graph.modules}
    cycles = [c for c in _strongly_connected_components(edges) if len(c) > 1]
    report = []
    for cycle in cycles:
        members = set(cycle)
        report.append("cycle between " + ", ".join(cycle) + ":")
        for importer in cycle:
            for imported in sorted(edges[importer] & members):
                for d in graph.get_import_details(importer=importer, imported=imported):
                    report.append(f"  {importer} (l.{d['line_number']}: {d['line_contents']}) -> {imported}")
    assert not cycles, ("import cycles (a module inside the package importing the top-level axn_fast "
                        "closes one; take the extension's names with `from axn_fast._core import name`):\n"
                        + "\n".join(report))


# ---------------------------------------------------------------- types

def test_mypy_clean() -> None:
    pytest.importorskip("mypy", reason="the dev extra installs mypy")
    proc = _run(["-m", "mypy"])  # files and settings: pyproject's [tool.mypy]
    assert proc.returncode == 0, f"mypy:\n{proc.stdout}\n{proc.stderr}"


def test_core_stub_matches_extension() -> None:
    pytest.importorskip("mypy", reason="the dev extra installs mypy")
    proc = _run(["-m", "mypy.stubtest", "axn_fast._core", "--allowlist", "tests/stubtest_allowlist.txt"])
    assert proc.returncode == 0, f"python/axn_fast/_core.pyi differs from the built extension:\n{proc.stdout}\n{proc.stderr}"


def test_package_is_marked_typed() -> None:
    files = resources.files("axn_fast")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("_core.pyi").is_file()


def _type_checking_imports(init: Path) -> Dict[str, str]:
    """name -> module of the imports inside ``if TYPE_CHECKING:`` in ``init``."""
    found: Dict[str, str] = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.dump(stmt)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = stmt.module
    return found


def test_lazy_names_are_visible_to_type_checkers() -> None:
    lazy = {name: _absolute("axn_fast", module) for name, module in axn_fast._LAZY.items()}
    assert _type_checking_imports(PACKAGE_DIR / "__init__.py") == lazy
    assert set(lazy) <= set(axn_fast.__all__)


def _absolute(package: str, module: str) -> str:
    return package + module if module.startswith(".") else module


# ---------------------------------------------------------------- one version

def _version_in_file(path: Path) -> str:
    # The default pattern of scikit-build-core's regex version provider.
    pattern = r'(?i)^(__version__|VERSION)(?: ?\: ?str)? *= *([\'"])v?(?P<value>.+?)\2'
    match = re.search(pattern, path.read_text(), re.MULTILINE)
    assert match, f"no __version__ in {path}"
    return match.group("value")


def test_one_version_source() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    source = pyproject["tool"]["scikit-build"]["metadata"]["version"]
    assert source["provider"] == "scikit_build_core.metadata.regex"
    assert "regex" not in source
    assert (REPO / source["input"]).resolve() == (PACKAGE_DIR / "_version.py").resolve()
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "python/axn_fast/_version.py" in cmake and "SKBUILD_PROJECT_VERSION" not in cmake

    version = _version_in_file(PACKAGE_DIR / "_version.py")
    assert axn_fast.__version__ == version
    assert axn_fast._core.__version__ == version, "the extension was built from another version: rebuild it"


def test_installed_metadata_agrees() -> None:
    """In an installed package (CI), the wheel's metadata carries the same version."""
    from importlib import metadata
    try:
        dist = metadata.distribution("axn_fast")
    except metadata.PackageNotFoundError:
        pytest.skip("used in place (no dist-info): nothing installed to compare")
    assert dist.version == axn_fast.__version__
