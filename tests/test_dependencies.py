"""Dependencies as declared: every third-party import of ``src/medseg`` is declared in ``pyproject.toml``,
every runtime dependency has a floor, and the installed versions meet the floors.

The floors themselves (see the comments in ``pyproject.toml``) were checked to resolve together on CPython
3.11; this test keeps the declaration honest against the code and the environment the suite runs in.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
requirements = pytest.importorskip("packaging.requirements")
version = pytest.importorskip("packaging.version")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "medseg"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared(group: str | None = None) -> dict[str, "requirements.Requirement"]:
    """Requirements by canonical name: the runtime ``dependencies`` or one optional group."""
    items = project()["dependencies"] if group is None else project()["optional-dependencies"][group]
    reqs = [requirements.Requirement(item) for item in items]
    return {canonical(r.name): r for r in reqs}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> files of src/medseg importing it (lazy imports inside functions too)."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "medseg" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def module_level_imports() -> set[str]:
    """Top-level module names imported outside any function body (loaded with the medseg module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name.split(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.add(child.module.split(".")[0])
            visit(child)

    for path in sorted(SRC.rglob("*.py")):
        visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def optional() -> set[str]:
    """Canonical names declared in an optional extra other than ``test`` (e.g. ``export``)."""
    return {canonical(requirements.Requirement(item).name)
            for group, items in project().get("optional-dependencies", {}).items() if group != "test"
            for item in items}


def floor(req: "requirements.Requirement") -> "version.Version | None":
    lows = [version.Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else None


def test_every_import_is_a_declared_runtime_dependency():
    # a package of an optional extra (onnx, onnxruntime: `export`) counts only where every import of it is lazy,
    # inside a function (which then names the extra when it is missing)
    runtime = declared()
    providers = md.packages_distributions()
    eager = module_level_imports()
    missing = []
    for module, files in sorted(third_party_imports().items()):
        dists = {canonical(d) for d in providers.get(module, [])}
        if not dists & set(runtime) and not (dists & optional() and module not in eager):
            where = ", ".join(sorted(files)[:3])
            what = f"installed by {sorted(dists)}" if dists else "not installed here"
            missing.append(f"'{module}' ({what}) imported in {where}")
    assert not missing, "imports not declared in pyproject.toml [project] dependencies:\n" + "\n".join(missing)


def test_the_imports_seen_include_the_known_ones():
    # guards the scan itself: an AST walk that finds nothing would make the test above pass vacuously
    assert {"torch", "numpy", "safetensors", "cv2", "yaml"} <= set(third_party_imports())


def test_every_runtime_dependency_has_a_floor():
    assert [str(r) for r in declared().values() if floor(r) is None] == []


def test_optional_packages_are_imported_lazily():
    # guards the rule above: onnx/onnxruntime are imported inside functions only, and the scan sees them
    assert {"onnx", "onnxruntime"} <= set(third_party_imports())
    assert not {"onnx", "onnxruntime"} & module_level_imports()
    assert {"torch", "numpy"} <= module_level_imports()


@pytest.mark.parametrize("group", [None, "test", "export"])
def test_installed_versions_meet_the_floors(group):
    bad = []
    for name, req in declared(group).items():
        try:
            installed = md.version(req.name)
        except md.PackageNotFoundError:
            bad.append(f"{req}: not installed")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            bad.append(f"{req}: installed {installed}")
    assert not bad, "installed versions outside pyproject.toml's ranges (run `make install`):\n" + "\n".join(bad)


def uses_numpy_private_core() -> list[str]:
    """Files that read ``np._core`` / ``numpy._core`` directly (it exists from NumPy 2.0 on)."""
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr == "_core" and isinstance(node.value, ast.Name)
                    and node.value.id in ("np", "numpy")):
                hits.append(str(path.relative_to(ROOT)))
    return hits


def test_known_version_requirements():
    runtime, test = declared(), declared("test")
    # medpy 0.5.1's assd fails on NumPy >= 1.24 (the suite's distance oracle)
    assert floor(test["medpy"]) >= version.Version("0.5.2")
    # np._core appeared in NumPy 2.0
    if uses_numpy_private_core():
        assert floor(runtime["numpy"]) >= version.Version("2.0"), uses_numpy_private_core()
    # weights_only=True loads can run code before torch 2.6 (CVE-2025-32434); checkpoints rely on them
    assert floor(runtime["torch"]) >= version.Version("2.6")
    # the test oracles must resolve together with NumPy 2 (pysodmetrics < 1.6 pins numpy < 2)
    assert floor(test["pysodmetrics"]) >= version.Version("1.6")
