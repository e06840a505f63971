"""The house rules, checked: the import-linter contract holds and catches a `cls_ray` module that
imports `actors`; files stay small enough to hold one idea; function-local imports only where
an optional or heavy dependency justifies one."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# module imported inside a function -> why (each such import carries a comment saying so)
LOCAL_IMPORTS = {
    "cls_ray.engine.vllm": "vLLM is the optional `gpu` extra",
    "vllm.distributed.device_communicators.pynccl": "vLLM is the optional `gpu` extra",
    "vllm.distributed.utils": "vLLM is the optional `gpu` extra",
    "deepspeed": "picks its accelerator at import: only inside a Train worker",
    "peft": "seconds to import: only where an adapter is built or loaded",
    "actors.consolidation": "the pipeline loads in the job's worker, not the scheduler actor",
    "transformers": "its tokenizers import torch: the ingress needs one for a chat template only",
    "actors.deploy": "the weight-stream machinery loads on an admin promote, not in every ingress",
    "cls_ray.memory.embedder": "torch: `from cls_ray.memory import Embedder` on first use",
    "cls_ray.memory": "pymilvus: `from cls_ray.memory import MilvusStore` on first use",
    "ray._private.ray_logging": "Ray's private printer of worker output, its absence handled",
    "actors.ray_cluster": "Ray: the CLI loads it only when the process already runs Ray",
}


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contract_holds():
    got = _lint(ROOT)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "1 kept, 0 broken" in got.stdout


def test_the_contract_fails_when_a_cls_ray_module_imports_actors(tmp_path):
    for part in ("cls_ray", "actors"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    sleep = tmp_path / "cls_ray" / "consolidate" / "sleep.py"
    sleep.write_text(sleep.read_text() + "\nfrom actors.deploy import promote  # noqa\n")
    got = _lint(tmp_path)
    assert got.returncode != 0
    assert "cls_ray.consolidate.sleep -> actors.deploy" in got.stdout, got.stdout


def _python_files(part: str) -> list[Path]:
    return sorted((ROOT / part).rglob("*.py"))


@pytest.mark.parametrize(("part", "limit"), [("actors", 300), ("cls_ray", 450)])
def test_files_hold_one_idea(part, limit):
    long = {
        str(p.relative_to(ROOT)): n
        for p in _python_files(part)
        if (n := len(p.read_text().splitlines())) > limit
    }
    assert long == {}, f"longer than {limit} lines"


def test_imports_are_at_the_top_but_for_optional_or_heavy_dependencies():
    found = {}
    for part in ("cls_ray", "actors"):
        for path in _python_files(part):
            src = path.read_text()
            lines = src.splitlines()
            for fn in ast.walk(ast.parse(src)):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        name = node.module if isinstance(node, ast.ImportFrom) else None
                        name = name or node.names[0].name
                        # the reason: a comment on the line or just above it (its group)
                        here = "".join(lines[max(0, node.lineno - 3) : node.lineno])
                        found[f"{path.relative_to(ROOT)}:{node.lineno}"] = (name, "#" in here)
    unexpected = {k: v for k, v in found.items() if v[0] not in LOCAL_IMPORTS}
    assert unexpected == {}
    assert [k for k, (_, why) in found.items() if not why] == [], "say why it is local"
