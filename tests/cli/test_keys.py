"""`cls-ray keys`: a key is shown once, listed by id and role, and revoked by id."""

import json

from cls_ray.cli.main import main
from tests.cli.test_main import _last_json


def test_keys_add_list_revoke(tmp_path, capsys):
    state = ["--set", f"state_dir={tmp_path}"]
    assert main(["keys", "add", "cora", "--role", "curator", "--json", *state]) == 0
    made = _last_json(capsys.readouterr().out)
    assert made["role"] == "curator" and made["key"].startswith(f"clsr_{made['id']}_")
    assert made["key"] not in (tmp_path / "keys.json").read_text()
    assert main(["keys", "revoke", made["id"], "--json", *state]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--json", *state]) == 0
    listed = _last_json(capsys.readouterr().out)["keys"]
    assert listed == [{"id": made["id"], "name": "cora", "role": "curator", "revoked": True}]
    assert main(["keys", "revoke", "nope", *state]) == 1
    assert "no key with id 'nope'" in capsys.readouterr().err
    assert json.loads((tmp_path / "keys.json").read_text())[0]["name"] == "cora"
