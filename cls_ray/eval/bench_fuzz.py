"""A property-based fuzz of the served API (`cls-ray bench fuzz`): `schemathesis` generates
requests from the application's own OpenAPI document, valid and invalid, for every route, once
per caller (no key, then keys with the `user`, `curator` and `admin` roles) and checks every
response against the document.

A row per caller: `requests` sent, `statuses` answered, `errors_5xx`, and `violations`: the
responses that break the schema (an undeclared status, a body or header unlike the declared one,
invalid data accepted, a server error), grouped by check and operation as schemathesis reports
them. The targets: no 5xx and no violation, over at least 500 requests in all.

With the admin key, `POST /admin/sleep` is left out: it starts a consolidation on the cluster
(fuzzed without a key or with a lesser one it is refused, and those answers are checked).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests

# The checks that a response conforms to the document, and that invalid input is refused.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# Schema examples, boundary values of every field (most of the requests), random cases.
PHASES = ("examples", "coverage", "fuzzing")
# Operations that start heavy background work when allowed: fuzzed only by callers refused them.
HEAVY = {"admin": [("POST", "/admin/sleep")]}


def fuzz_settings() -> dict:
    """The fuzzed application's config: one generator replica, anonymous asking on (the no-key
    caller reaches the user routes), no per-caller rates (the fuzz comes from one address; a
    429 would hide the route behind it), and its own name."""
    return {
        "serve.app_name": "cls-ray-fuzz",
        "serve.host": "127.0.0.1",
        "serve.generator.autoscaling.min_replicas": 1,
        "serve.generator.autoscaling.max_replicas": 1,
        "serve.auth.anonymous": True,
        "serve.auth.rate_per_minute": 0,
        "serve.auth.anonymous_rate_per_minute": 0,
        "serve.auth.work_per_minute": 0,
    }


def st_command(
    url: str,
    key: str | None,
    *,
    max_examples: int,
    seed: int,
    report_dir: Path,
    request_timeout_s: float,
    exclude: Sequence[str] = (),
    phases: Sequence[str] = PHASES,
) -> list[str]:
    """The `schemathesis run` command line for one caller."""
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--phases",
        ",".join(phases),
        "--request-timeout",
        str(request_timeout_s),
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--continue-on-failure",
        "--no-color",
        "--report",
        "json,har",
        "--report-dir",
        str(report_dir),
        "--report-json-path",
        str(report_dir / "run.json"),
        "--report-har-path",
        str(report_dir / "requests.har"),
    ]
    if key:
        cmd += ["--header", f"X-API-Key: {key}"]
    for op in exclude:
        cmd += ["--exclude-operation-id", op]
    return cmd


def operation_id(spec: dict, method: str, path: str) -> str | None:
    """The operationId the OpenAPI document gives `method path`."""
    return spec.get("paths", {}).get(path, {}).get(method.lower(), {}).get("operationId")


def statuses_in_har(path: Path) -> Counter:
    """How often each status was answered, from the HAR file of one run."""
    if not path.exists():
        return Counter()
    har = json.loads(path.read_text())
    return Counter(str(e["response"]["status"]) for e in har.get("log", {}).get("entries", []))


def role_row(role: str, report: dict, statuses: Counter, rc: int, stderr_tail: str) -> dict:
    """One caller's row from schemathesis' JSON report and the statuses of its HAR file."""
    failures = report.get("failures", [])
    return {
        "caller": role,
        "requests": sum(statuses.values()),
        "test_cases": report.get("test_cases", {}).get("generated", 0),
        "operations": (report.get("operations") or {}).get("tested", 0),
        "operations_total": (report.get("operations") or {}).get("total", 0),
        "statuses": dict(sorted(statuses.items())),
        "errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "violations": sum(f["count"] for f in failures),
        "failures": [
            {
                "check": f["code"],
                "title": f["title"],
                "count": f["count"],
                "operations": f["operations"],
            }
            for f in failures
        ],
        "errors": report.get("errors", []),
        "complete": bool(report.get("complete")),
        "exit_code": rc,
        "log_tail": "" if rc == 0 else stderr_tail,
    }


def run_caller(
    url: str,
    role: str,
    key: str | None,
    *,
    max_examples: int,
    seed: int,
    out_dir: Path,
    request_timeout_s: float,
    timeout_s: float,
    exclude: Sequence[str] = (),
    phases: Sequence[str] = PHASES,
) -> dict:
    """Fuzzes every route as one caller (but the operations `exclude`); its row."""
    report_dir = (Path(out_dir) / role).resolve()  # absolute: schemathesis runs inside it
    report_dir.mkdir(parents=True, exist_ok=True)
    cmd = st_command(
        url,
        key,
        max_examples=max_examples,
        seed=seed,
        report_dir=report_dir,
        request_timeout_s=request_timeout_s,
        exclude=exclude,
        phases=phases,
    )
    try:
        # Run in the report folder: schemathesis keeps a cache in its working directory.
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, cwd=report_dir
        )
        rc, out = done.returncode, (done.stdout + done.stderr)
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"schemathesis ran past {timeout_s:g} s: {e.stdout or ''}"
    (report_dir / "output.txt").write_text(out if isinstance(out, str) else str(out))
    json_path = report_dir / "run.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {}
    return role_row(role, report, statuses_in_har(report_dir / "requests.har"), rc, out[-3000:])


def summary(rows: list[dict], min_requests: int = 500) -> dict:
    requests = sum(r["requests"] for r in rows)
    return {
        "requests": requests,
        "errors_5xx": sum(r["errors_5xx"] for r in rows),
        "violations": sum(r["violations"] for r in rows),
        "every_run_complete": all(r["complete"] and not r["errors"] for r in rows),
        "enough_requests": requests >= min_requests,
        "min_requests": min_requests,
    }


def bench_fuzz(
    url: str,
    keys: Mapping[str, str | None],
    *,
    max_examples: int,
    out_dir: Path,
    seed: int = 0,
    request_timeout_s: float = 60.0,
    timeout_s: float = 1800.0,
    min_requests: int = 500,
    left_out: Mapping[str, Sequence[tuple[str, str]]] = HEAVY,
    phases: Sequence[str] = PHASES,
    log: Callable[[str], None] = print,
) -> dict:
    """A schemathesis run per caller in `keys` (role → key, None for no key) against the
    application at `url`, each but the `(method, path)`s `left_out` names for its role; the rows
    and the targets' `summary`."""
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    rows = []
    for role, key in keys.items():
        log(f"  fuzzing every route as {role} ({max_examples} examples an operation) ...")
        row = run_caller(
            url,
            role,
            key,
            max_examples=max_examples,
            seed=seed,
            out_dir=out_dir,
            request_timeout_s=request_timeout_s,
            timeout_s=timeout_s,
            exclude=[operation_id(spec, m, p) for m, p in left_out.get(role, ())],
            phases=phases,
        )
        log(
            f"  {role}: {row['requests']} requests, 5xx {row['errors_5xx']}, "
            f"violations {row['violations']}"
        )
        rows.append(row)
    return {
        "rows": rows,
        "summary": summary(rows, min_requests),
        "max_examples": max_examples,
        "phases": list(phases),
        "left_out": {role: [" ".join(op) for op in ops] for role, ops in left_out.items()},
    }


def format_fuzz(result: dict) -> str:
    lines = [f"{'caller':<10}{'requests':>9}{'5xx':>6}{'violations':>12}  statuses"]
    for r in result["rows"]:
        st = " ".join(f"{s}x{n}" for s, n in r["statuses"].items())
        lines.append(
            f"{r['caller']:<10}{r['requests']:>9}{r['errors_5xx']:>6}{r['violations']:>12}  {st}"
        )
        for f in r["failures"][:6]:
            lines.append(
                f"    {f['check']} x{f['count']}: {f['title']} ({', '.join(f['operations'][:3])})"
            )
        for e in r["errors"][:3]:
            lines.append(f"    error x{e['count']}: {e['title']}")
    s = result["summary"]
    lines.append(
        f"{s['requests']} requests; 5xx {s['errors_5xx']}; violations {s['violations']}; "
        f"every run complete: {s['every_run_complete']}"
    )
    return "\n".join(lines)
