"""Who is asking: API keys with roles, stored hashed, and the rate each key may ask at.

Roles, each including the one before: `user` (ask; rate and correct their own sessions),
`curator` (write documents, give corrections that are trusted for training), `admin` (promote,
roll back, sleep, read the buffer). A key looks like `clsr_<id>_<secret>`; the keys file (on the
state volume, or mounted from a Kubernetes secret) holds its id, name, role and the SHA-256 of the
whole key, never the key itself. `cls-ray keys add|list|revoke` manage it; the ingress rereads it
when it changes, so a revoked key stops working without a redeploy.

Without a key a request is `anonymous`: it may ask where `serve.auth.anonymous` allows it (the
embedded default), and nothing else. The environment variable `serve.admin_key_env` still holds
an admin key for operators who keep one secret outside the keys file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cls_ray.session import TRUSTED_ROLES, Role

ROLES: tuple[Role, ...] = ("anonymous", "user", "curator", "admin")
_PREFIX = "clsr_"


def at_least(role: str, needed: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a key's id (None: anonymous), its name and role."""

    key_id: str | None
    name: str
    role: Role

    @property
    def trusted(self) -> bool:
        return self.role in TRUSTED_ROLES


ANONYMOUS = Principal(None, "anonymous", "anonymous")


@dataclass
class KeyRecord:
    id: str
    name: str
    role: Role
    sha256: str
    created_at: float
    revoked_at: float | None = None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The keys file: JSON, replaced atomically, reread when its modification time changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._records: dict[str, KeyRecord] = {}

    def _load(self) -> dict[str, KeyRecord]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._mtime, self._records = None, {}
                return self._records
            if mtime != self._mtime:
                rows = json.loads(self.path.read_text() or "[]")
                self._records = {r["id"]: KeyRecord(**r) for r in rows}
                self._mtime = mtime
            return self._records

    def _save(self, records: dict[str, KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump([asdict(r) for r in records.values()], f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def add(self, name: str, role: Role) -> tuple[KeyRecord, str]:
        """A new key for `name` with `role`: its record and the key, shown this once."""
        if role not in ROLES[1:]:
            raise ValueError(f"role must be one of user, curator, admin; got {role!r}")
        if not name.strip():
            raise ValueError("a key needs a name (who holds it)")
        records = dict(self._load())
        key_id = secrets.token_hex(4)
        while key_id in records:
            key_id = secrets.token_hex(4)
        key = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        rec = KeyRecord(key_id, name.strip(), role, _digest(key), time.time())
        records[key_id] = rec
        self._save(records)
        return rec, key

    def revoke(self, key_id: str) -> KeyRecord:
        records = dict(self._load())
        if key_id not in records:
            raise KeyError(f"no key with id {key_id!r} in {self.path}")
        rec = records[key_id]
        if rec.revoked_at is None:
            records[key_id] = rec = KeyRecord(**{**asdict(rec), "revoked_at": time.time()})
            self._save(records)
        return rec

    def list(self) -> list[KeyRecord]:
        return sorted(self._load().values(), key=lambda r: r.created_at)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a live key, else None (unknown, malformed, revoked)."""
        if not key.startswith(_PREFIX) or key.count("_") < 2:
            return None
        key_id = key[len(_PREFIX) :].split("_", 1)[0]
        rec = self._load().get(key_id)
        if rec is None or rec.revoked_at is not None:
            return None
        if not hmac.compare_digest(rec.sha256, _digest(key)):
            return None
        return Principal(rec.id, rec.name, rec.role)


class RateLimiter:
    """A token bucket per principal (anonymous callers share one per client address): `rate`
    requests a minute, bursts of `burst`. `take` answers 0 when a request may go, else the
    seconds until one may (for `Retry-After`)."""

    def __init__(self, per_minute: float, burst: int, max_keys: int = 100_000):
        self.rate, self.burst, self.max_keys = per_minute / 60.0, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str, cost: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[who] = (tokens - cost, now)
                wait = 0.0
            else:
                self._buckets[who] = (tokens, now)
                wait = (cost - tokens) / self.rate
            if len(self._buckets) > self.max_keys:  # forget the idlest callers
                for k, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[
                    : len(self._buckets) // 2
                ]:
                    self._buckets.pop(k, None)
        return wait


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


class AccessDenied(Exception):
    """`status` 401 (no or bad key), 403 (role too low) or 429 (rate; `retry_after_s`)."""

    def __init__(self, status: int, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.status, self.detail, self.retry_after_s = status, detail, retry_after_s


class Access:
    """The ingress's door: who a key is, whether that role may do a thing, and the rate."""

    def __init__(self, cfg):
        a = cfg.serve.auth
        self.keys = KeyStore(cfg.keys_path)
        self.admin_env = cfg.serve.admin_key_env
        self.anonymous = a.anonymous
        self.per_key = RateLimiter(a.rate_per_minute, a.burst)
        self.per_address = RateLimiter(a.anonymous_rate_per_minute, a.burst)
        # Work (`limits.request_cost`) a minute per caller; the burst holds the largest request.
        burst = max(cfg.serve.limits.max_request_cost, int(a.work_per_minute // 4))
        self.work = RateLimiter(a.work_per_minute, burst)

    def who(self, key: str | None) -> Principal:
        if not key:
            return ANONYMOUS
        admin = os.environ.get(self.admin_env) if self.admin_env else None
        if admin and hmac.compare_digest(key.encode(), admin.encode()):
            return Principal("env-admin", "admin (environment key)", "admin")
        p = self.keys.authenticate(key)
        if p is None:
            raise AccessDenied(401, "unknown or revoked API key (header X-API-Key)")
        return p

    def require(self, key: str | None, needed: Role, client: str = "?") -> Principal:
        """The caller's principal if it may act as `needed` (anonymous callers may ask where
        `serve.auth.anonymous` allows it) and is within its rate."""
        p = self.who(key)
        allowed = at_least(p.role, needed) or (
            p.role == "anonymous" and needed == "user" and self.anonymous
        )
        if not allowed:
            if p.role == "anonymous":
                raise AccessDenied(401, f"this needs an API key with the {needed} role (X-API-Key)")
            raise AccessDenied(403, f"key {p.key_id} has the {p.role} role; this needs {needed}")
        limiter, who = (
            (self.per_address, f"addr:{client}") if p.key_id is None else (self.per_key, p.key_id)
        )
        wait = limiter.take(who)
        if wait > 0:
            raise AccessDenied(429, f"rate limit of {p.name} reached", wait)
        return p

    def charge(self, p: Principal, cost: int, client: str = "?") -> None:
        """Takes `cost` (`limits.request_cost`) from the caller's work budget; 429 beyond it."""
        who = f"addr:{client}" if p.key_id is None else p.key_id
        wait = self.work.take(who, float(cost))
        if wait > 0:
            raise AccessDenied(
                429, f"work budget of {p.name} reached (this request costs {cost})", wait
            )


def without_rate_limits(cfg):
    """`cfg` with no per-caller rate limits: for a load the operator runs on purpose from one
    address (the demo's simulated users, `bench serve`), which the limits would otherwise cut."""
    auth = cfg.serve.auth.model_copy(
        update={"rate_per_minute": 0, "anonymous_rate_per_minute": 0, "work_per_minute": 0}
    )
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"auth": auth})})
