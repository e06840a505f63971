"""The README's first command installs the core dependencies only (`pip install -e .`, no
extras): every module of cls-ray must import with those. The tests run with the dev extra
installed, so a module-level import of a dev-only package would pass every other test and fail
on a user's machine; this reads the imports and the dependency tree instead."""

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml itself")

ROOT = Path(__file__).resolve().parents[1]
OURS = {"cls_ray", "actors"}
# Modules that only an optional extra brings, imported only where that extra is used.
EXTRA_ONLY = {"vllm": "gpu"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(reqs: list[str]) -> set[str]:
    """The distributions that installing `reqs` brings, extras followed."""
    seen: set[str] = set()
    todo = [(Requirement(r), set(Requirement(r).extras)) for r in reqs]
    while todo:
        req, extras = todo.pop()
        name = _norm(req.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        try:
            subs = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for s in map(Requirement, subs):
            env = [{"extra": e} for e in extras] or [{"extra": ""}]
            if s.marker is None or any(s.marker.evaluate(e) for e in env):
                todo.append((s, set(s.extras)))
    return {k for k in seen if "[" not in k}


def _imports(path: Path) -> set[str]:
    """Top-level packages `path` imports, at module level or inside functions (a lazy import
    fails when its function runs), except under `if TYPE_CHECKING:` and in `try:` blocks that
    handle an ImportError."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        guarded = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        if isinstance(node, ast.Try):
            caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
            guarded = "ImportError" in caught or "ModuleNotFoundError" in caught
        if guarded:
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _not_core(paths: list[Path], project: dict) -> list[str]:
    core = _closure(project["dependencies"])
    dists_of = md.packages_distributions()
    missing = []
    for path in paths:
        for mod in _imports(path):
            if mod in OURS or mod in sys.stdlib_module_names or mod == "__future__":
                continue
            if mod in EXTRA_ONLY:  # its extra exists, and names it
                extra = project["optional-dependencies"][EXTRA_ONLY[mod]]
                assert any(Requirement(r).name == mod for r in extra), path
                continue
            dists = {_norm(d) for d in dists_of.get(mod, [])}
            if not dists & core:
                missing.append(f"{path.name}: {mod} ({', '.join(sorted(dists)) or '?'})")
    return missing


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_module_imports_with_the_core_dependencies_alone():
    paths = sorted(
        [*ROOT.joinpath("cls_ray").rglob("*.py"), *ROOT.joinpath("actors").rglob("*.py")]
    )
    missing = _not_core(paths, _project())
    assert not missing, "imported but not a core dependency:\n" + "\n".join(missing)


def test_the_check_names_a_dev_only_import(tmp_path):
    """The dev extra's packages are outside the core closure, at module level or lazily; a
    guarded optional import is allowed."""
    mod = tmp_path / "mod.py"
    mod.write_text(
        "import json\nimport torch\n\ndef f():\n    import schemathesis\n"
        "try:\n    import pytest\nexcept ImportError:\n    pytest = None\n"
    )
    assert _not_core([mod], _project()) == ["mod.py: schemathesis (schemathesis)"]
    mod.write_text("from moto import mock_aws\n")
    assert _not_core([mod], _project()) == ["mod.py: moto (moto)"]
