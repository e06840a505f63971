"""Reading a config: a YAML file plus `--set dotted.key=value` overrides, validated into `Config`.

Every error names the file, the line, the field and what was expected (or "(command line)" for an
override). A key that moved to a section of its own (`serve.max_batch_size` is now
`serve.generator.max_batch_size`) is named with its new place, so an old config is a one-line fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cls_ray.config.base import ConfigError
from cls_ray.config.schema import Config

# Flat keys of earlier releases -> where they live now.
MOVED: dict[str, str] = {
    **{
        f"consolidate.ppo_{k}": f"consolidate.ppo.{k}"
        for k in (
            "steps lr batch_size kl_beta kl_kind clip vf_coef lam tis_cap credit whiten "
            "ptx_coef ptx_batch reward_offset fresh_per_family temperature"
        ).split()
    },
    "consolidate.auto_sleep": "consolidate.schedule.auto",
    "consolidate.sleep_min_sessions": "consolidate.schedule.min_sessions",
    "consolidate.sleep_interval_s": "consolidate.schedule.interval_s",
    "consolidate.sleep_poll_s": "consolidate.schedule.poll_s",
    "consolidate.sleep_method": "consolidate.schedule.method",
    "consolidate.sleep_limit": "consolidate.schedule.limit",
    "serve.generator_autoscaling": "serve.generator.autoscaling",
    "serve.generator_num_cpus": "serve.generator.num_cpus",
    "serve.generator_num_gpus": "serve.generator.num_gpus",
    "serve.generator_max_ongoing_requests": "serve.generator.max_ongoing_requests",
    "serve.max_batch_size": "serve.generator.max_batch_size",
    "serve.batch_wait_timeout_s": "serve.generator.batch_wait_timeout_s",
    "serve.retriever_max_batch_size": "serve.retriever.max_batch_size",
    "serve.retriever_batch_wait_s": "serve.retriever.batch_wait_s",
    "serve.retriever_max_ongoing_requests": "serve.retriever.max_ongoing_requests",
    **{
        f"serve.weight_sync_{k}": f"serve.weight_sync.{k}"
        for k in ("host", "waves", "bucket_mb", "timeout_s", "join_timeout_s")
    },
}


def key_line(text: str, path: tuple) -> int | None:
    """Line (1-based) of the YAML key at `path`, or of its closest existing parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if pair is None:
                return line
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def new_place(key: str, value: Any = None) -> str | None:
    """Where an old dotted key (or a key under it) lives now; None when it did not move."""
    if key == "serve.weight_sync" and isinstance(value, str):
        return "serve.weight_sync.mode"  # was `reload | stream`, now a section
    for old, new in MOVED.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :]
    return None


def moved_keys(data: dict) -> list[tuple[str, str]]:
    """(old dotted key, new dotted key) for every key of `data` that lives elsewhere now."""
    out = []
    for section, body in data.items():
        if isinstance(body, dict):
            for key, value in body.items():
                new = new_place(f"{section}.{key}", value)
                if new:
                    out.append((f"{section}.{key}", new))
    return out


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    cur[keys[-1]] = value


def _read(path: str | Path | None) -> tuple[str, str, dict]:
    """The file's name, text and top-level mapping."""
    if path is None:
        return "<defaults>", "", {}
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{name}: cannot read config: {e.strerror}") from e
    try:
        data = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}{where}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{name}: expected a mapping of sections at the top, got {type(data).__name__}"
        )
    return name, text, data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads and validates a config file; `overrides` are `dotted.key=yaml_value` strings."""
    name, text, data = _read(path)
    problems = [
        f"{name}:{key_line(text, tuple(old.split('.'))) or '?'}: {old} moved to {new}"
        for old, new in moved_keys(data)
    ]
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw else ""))
    problems += [
        f"(command line): {key} moved to {new}"
        for key, value in parsed
        if (new := new_place(key, value))
    ]
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    for key, value in parsed:
        _set_dotted(data, key, value)
    from_cli = {key for key, _ in parsed}
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            where = "(command line)" if field in from_cli else name
            line = None if field in from_cli or not text else key_line(text, err["loc"])
            if line:
                where += f":{line}"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling and section)"
            lines.append(f"{where}: {field}: {msg}; got {err.get('input')!r}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def with_overrides(cfg: Config, overrides: dict[str, object]) -> Config:
    """`cfg` with `dotted.key: value` overrides, validated again (a command that needs its
    own settings for a run, such as `bench chaos`, without touching the config file)."""
    data = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    return Config.model_validate(data)
