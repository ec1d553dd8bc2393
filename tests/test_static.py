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
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import pytest

import axn_fast

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "python" / "axn_fast"


def _run(args: Sequence[str], timeout: float = 600,
         pythonpath: Optional[Path] = None) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    if pythonpath is not None:  # import axn_fast from there (before the installed or in-place one)
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------- import layers and cycles

def _lint_imports(pythonpath: Optional[Path] = None) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="the dev extra installs import-linter")
    return _run(["-c", "import sys; from importlinter.cli import lint_imports; "
                       "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
                pythonpath=pythonpath)


def test_import_contracts_hold() -> None:
    proc = _lint_imports()
    assert proc.returncode == 0, f"import contracts broken:\n{proc.stdout}\n{proc.stderr}"


def _tampered_copy(tmp_path: Path, edits: Dict[str, str]) -> Path:
    """A copy of the imported package under tmp_path with ``edits`` (relative path -> text) appended."""
    src = Path(axn_fast.__file__).parent
    shutil.copytree(src, tmp_path / "axn_fast", ignore=shutil.ignore_patterns("__pycache__", "data"))
    for rel, text in edits.items():
        with open(tmp_path / "axn_fast" / rel, "a") as f:
            f.write(text)
    return tmp_path


def test_contracts_catch_an_upward_function_level_import(tmp_path: Path) -> None:
    """The contracts are not vacuous: a lazy import of cli from search breaks them."""
    root = _tampered_copy(tmp_path, {"search/results.py": "\n\ndef _lazy() -> None:\n    import axn_fast.cli.main\n"})
    proc = _lint_imports(pythonpath=root)
    assert proc.returncode != 0 and "axn_fast.search is not allowed to import axn_fast.cli" in proc.stdout, proc.stdout

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


_HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn", "bm25s", "faiss", "matplotlib", "scipy",
          "safetensors", "ray", "fastapi")
_NUMPY_ONLY = ("Index", "SearchResult", "retrieve_and_rerank", "topk_recall", "DenseScoreCE", "ScoreMatrix",
               "build_score_matrix", "factorize", "ScoreNormalization", "estimate_normalization", "ANNCUR", "ADACUR",
               "TOUR", "exact_search", "evaluate", "low_rank_scores", "IndexFileError")


def test_core_needs_only_numpy_and_tqdm() -> None:
    """`import axn_fast` and the numpy-only API load none of the optional extras' packages."""
    proc = _run(["-c", f"import sys, axn_fast; [getattr(axn_fast, n) for n in {_NUMPY_ONLY!r}]; "
                       f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules))"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"optional packages imported by the numpy-only API: {proc.stdout}"


_GRAPH_SCRIPT = """
import json, grimp
g = grimp.build_graph("axn_fast", cache_dir=None)  # every import: function-level, TYPE_CHECKING
edges = {m: sorted(set(g.find_modules_directly_imported_by(m)) - {m}) for m in g.modules}
lines = {f"{a} {b}": [f"l.{d['line_number']}: {d['line_contents']}" for d in g.get_import_details(importer=a, imported=b)]
         for a in edges for b in edges[a]}
print(json.dumps({"edges": edges, "lines": lines}))
"""


def _import_cycles(pythonpath: Optional[Path] = None) -> List[str]:
    """One line per import that closes a cycle between two modules of the package, per cycle."""
    pytest.importorskip("grimp", reason="the dev extra installs import-linter (and grimp)")
    proc = _run(["-c", _GRAPH_SCRIPT], pythonpath=pythonpath)
    assert proc.returncode == 0, proc.stderr
    graph = json.loads(proc.stdout)
    edges: Dict[str, Set[str]] = {m: set(imported) for m, imported in graph["edges"].items()}
    report = []
    for cycle in _strongly_connected_components(edges):
        if len(cycle) < 2:
            continue
        report.append("cycle between " + ", ".join(cycle) + ":")
        for importer in cycle:
            for imported in sorted(edges[importer] & set(cycle)):
                for line in graph["lines"][f"{importer} {imported}"]:
                    report.append(f"  {importer} ({line}) -> {imported}")
    return report


def test_no_import_cycles() -> None:
    report = _import_cycles()
    assert not report, ("import cycles (a module inside the package importing the top-level axn_fast "
                        "closes one; take the extension's names with `from axn_fast._core import name`):\n"
                        + "\n".join(report))


def test_cycle_check_sees_function_level_imports(tmp_path: Path) -> None:
    root = _tampered_copy(tmp_path, {"errors.py": "\n\ndef _lazy() -> None:\n    import axn_fast._validation\n",
                                     "_validation.py": "\n\ndef _lazy() -> None:\n    import axn_fast.errors\n"})
    report = _import_cycles(pythonpath=root)
    assert report and report[0] == "cycle between axn_fast._validation, axn_fast.errors:", report


# ---------------------------------------------------------------- types

def test_mypy_clean() -> None:
    pytest.importorskip("mypy", reason="the dev extra installs mypy")
    proc = _run(["-m", "mypy"])  # files and settings: pyproject's [tool.mypy]
    assert proc.returncode == 0, f"mypy:\n{proc.stdout}\n{proc.stderr}"


# Heavy third-party packages the stub never needs: skipping them makes stubtest take seconds, not
# a minute (the package's __init__ imports every layer for type checkers).
_STUBTEST_CONFIG = """[mypy]
[mypy-torch.*,transformers.*,sentence_transformers.*,huggingface_hub.*,tokenizers.*,safetensors.*,\
matplotlib.*,faiss.*,sklearn.*,scipy.*,fastapi.*,starlette.*,uvicorn.*,pydantic.*,prometheus_client.*,ray.*]
follow_imports = skip
"""


def test_core_stub_matches_extension(tmp_path: Path) -> None:
    """stubtest: every name of the extension is in the stub and nothing else, with the right kind."""
    pytest.importorskip("mypy", reason="the dev extra installs mypy")
    config = tmp_path / "stubtest.ini"
    config.write_text(_STUBTEST_CONFIG)
    proc = _run(["-m", "mypy.stubtest", "axn_fast._core", "--allowlist", "tests/stubtest_allowlist.txt",
                 "--mypy-config-file", str(config)])
    assert proc.returncode == 0, f"python/axn_fast/_core.pyi differs from the built extension:\n{proc.stdout}\n{proc.stderr}"


_STUB_HEADER = """\
# Generated by `pybind11-stubgen axn_fast._core --numpy-array-use-type-var`, then tightened by
# `python tests/test_static.py` (regenerate with it after changing the bindings):
# - topk_ip / topk_ip_f16 return (scores, ids): tuple[NDArray[float32], NDArray[int64]];
# - k, num_threads and seed (checked in the bindings, any integer but bool) are SupportsIndex;
# - no __all__ (the extension has none).
# Checked by tests/test_static.py: mypy.stubtest for the names, this regeneration for the signatures.
"""


def _tightened_stub(generated: str) -> str:
    """pybind11-stubgen's output for _core with the hand edits listed in _STUB_HEADER."""
    out = generated.replace(") -> tuple:", ") -> tuple[numpy.typing.NDArray[numpy.float32], "
                                           "numpy.typing.NDArray[numpy.int64]]:")
    out = re.sub(r"\b(k|num_threads|seed): typing\.Any\b", r"\1: typing.SupportsIndex", out)
    out = "".join(line for line in out.splitlines(keepends=True) if not line.startswith("__all__"))
    return _STUB_HEADER + out


def _generate_core_stub(out_dir: Path) -> str:
    proc = _run(["-m", "pybind11_stubgen", "axn_fast._core", "--numpy-array-use-type-var", "-o", str(out_dir)])
    assert proc.returncode == 0, proc.stderr
    return _tightened_stub((out_dir / "axn_fast" / "_core.pyi").read_text())


def test_core_stub_signatures_are_generated(tmp_path: Path) -> None:
    """pybind11 functions carry no inspectable signature, so stubtest cannot compare parameters:
    the stub must be pybind11-stubgen's output for the built extension plus the listed hand edits."""
    pytest.importorskip("pybind11_stubgen", reason="the dev extra installs pybind11-stubgen")
    assert (PACKAGE_DIR / "_core.pyi").read_text() == _generate_core_stub(tmp_path), (
        "python/axn_fast/_core.pyi is out of date with the built extension: run `python tests/test_static.py`")


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


def _annotations(tree: ast.AST) -> List[ast.expr]:
    found: List[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            found += [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                      if a is not None and a.annotation is not None]
            found += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def test_sources_stay_python_39() -> None:
    """mypy 2 cannot target 3.9 (requires-python): check 3.9 grammar, and that `X | Y` / `list[int]`
    annotations, evaluated at run time on 3.9, only appear under `from __future__ import annotations`."""
    problems = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(REPO)
        try:
            tree = ast.parse(path.read_text(), filename=str(rel), feature_version=(3, 9))
        except SyntaxError as exc:
            problems.append(f"{rel}:{exc.lineno}: not Python 3.9 syntax: {exc.msg}")
            continue
        if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
               for n in tree.body):
            continue
        for ann in _annotations(tree):
            for n in ast.walk(ann):
                if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
                    problems.append(f"{rel}:{n.lineno}: `X | Y` annotation fails on 3.9 without __future__ annotations")
                elif (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                      and n.value.id in {"list", "dict", "tuple", "set", "frozenset", "type"}):
                    problems.append(f"{rel}:{n.lineno}: `{n.value.id}[...]` annotation fails on 3.9 without "
                                    "__future__ annotations")
    assert not problems, "\n".join(problems)


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


if __name__ == "__main__":  # regenerate python/axn_fast/_core.pyi from the built extension
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (PACKAGE_DIR / "_core.pyi").write_text(_generate_core_stub(Path(tmp)))
    print(f"wrote {PACKAGE_DIR / '_core.pyi'}")
