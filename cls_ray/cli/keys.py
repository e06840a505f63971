"""`cls-ray keys add NAME --role R | list | revoke ID`: the serving stack's API keys, stored
hashed in the keys file (`serve.auth.keys_file`, default `<state_dir>/keys.json`); a running
ingress rereads the file, so a new or revoked key counts at once."""

from __future__ import annotations

import time

from cls_ray.config import Config
from cls_ray.serving.keys import KeyStore


def cmd_keys(args, cfg: Config) -> dict:
    store = KeyStore(cfg.keys_path)
    if args.action == "add":
        if not args.name:
            raise ValueError("give the key's holder: cls-ray keys add NAME --role user")
        rec, key = store.add(args.name, args.role)
        print(f"key {rec.id} for {rec.name} ({rec.role}) in {cfg.keys_path}; shown once:\n{key}")
        return {"id": rec.id, "name": rec.name, "role": rec.role, "key": key}
    if args.action == "revoke":
        if not args.name:
            raise ValueError("give the key's id: cls-ray keys revoke ID (see cls-ray keys list)")
        try:
            rec = store.revoke(args.name)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        print(f"revoked key {rec.id} ({rec.name}, {rec.role})")
        return {"id": rec.id, "revoked": True}
    rows = store.list()
    print(f"{len(rows)} key(s) in {cfg.keys_path}")
    for r in rows:
        state = "revoked" if r.revoked_at else "live"
        made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at))
        print(f"  {r.id}  {r.role:8} {state:8} {made}  {r.name}")
    return {
        "keys": [
            {"id": r.id, "name": r.name, "role": r.role, "revoked": r.revoked_at is not None}
            for r in rows
        ]
    }
