import pytest

from cls_ray.config import Config, ConfigError, expand_env, load_config
from tests.helpers import ROOT


def test_local_config_loads():
    cfg = load_config(ROOT / "configs" / "local.yaml")
    assert isinstance(cfg, Config)
    assert cfg.store.uri == "" and cfg.store_uri.endswith("milvus.db")
    assert cfg.world.scale == 1.0


def test_unknown_field_names_file_line_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("state_dir: x\nrgr:\n  top_k: 4\n  topk: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:4" in msg and "rgr.topk" in msg and "unknown field" in msg


def test_wrong_type_names_field_and_expectation(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("rgr:\n  top_k: many\nstore:\n  search_mode: fuzzy\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:2: rgr.top_k" in msg and "integer" in msg
    assert f"{p}:4: store.search_mode" in msg and "'dense', 'bm25' or 'hybrid'" in msg


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("rgr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_from_the_command_line(tmp_path):
    cfg = load_config(None, ["rgr.top_k=7", "store.uri=http://127.0.0.1:19530"])
    assert cfg.rgr.top_k == 7
    assert cfg.store_uri == "http://127.0.0.1:19530"
    with pytest.raises(ConfigError, match=r"\(command line\): rgr.top_k"):
        load_config(None, ["rgr.top_k=0"])


def test_token_and_uri_read_the_environment_on_use_only(monkeypatch):
    monkeypatch.setenv("MILVUS_TOKEN_FOR_TEST", "root:secret")
    cfg = load_config(None, ["store.token=${MILVUS_TOKEN_FOR_TEST}", "store.uri=${NO_SUCH_VAR}"])
    assert cfg.store.token == "${MILVUS_TOKEN_FOR_TEST}"  # never expanded into a dump
    assert "root:secret" not in cfg.model_dump_json()
    assert expand_env(cfg.store.token, "store.token") == "root:secret"
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    with pytest.raises(
        ConfigError, match=r"store.uri reads \$\{NO_SUCH_VAR\} from the environment"
    ):
        expand_env(cfg.store.uri, "store.uri")


def test_every_shipped_config_loads():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), Config), path


def test_an_old_flat_key_names_its_file_line_and_new_place(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text(
        "serve:\n"
        "  port: 8001\n"
        "  max_batch_size: 32\n"
        "  generator_autoscaling:\n"
        "    max_replicas: 4\n"
        "  weight_sync: stream\n"
        "consolidate:\n"
        "  ppo_steps: 10\n"
        "  auto_sleep: true\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:3: serve.max_batch_size moved to serve.generator.max_batch_size" in msg
    assert f"{p}:4: serve.generator_autoscaling moved to serve.generator.autoscaling" in msg
    assert f"{p}:6: serve.weight_sync moved to serve.weight_sync.mode" in msg
    assert f"{p}:8: consolidate.ppo_steps moved to consolidate.ppo.steps" in msg
    assert f"{p}:9: consolidate.auto_sleep moved to consolidate.schedule.auto" in msg
    # The same config in its new shape loads.
    p.write_text(
        "serve:\n  generator:\n    max_batch_size: 32\n    autoscaling: {max_replicas: 4}\n"
        "  weight_sync: {mode: stream}\n"
        "consolidate:\n  ppo: {steps: 10}\n  schedule: {auto: true}\n"
    )
    cfg = load_config(p)
    assert cfg.serve.generator.max_batch_size == 32 and cfg.serve.weight_sync.mode == "stream"
    assert cfg.consolidate.ppo.steps == 10 and cfg.consolidate.schedule.auto


def test_an_old_flat_key_on_the_command_line_names_its_new_place():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["serve.retriever_max_batch_size=64", "consolidate.sleep_limit=5"])
    msg = str(e.value)
    assert (
        "(command line): serve.retriever_max_batch_size moved to serve.retriever.max_batch_size"
        in msg
    )
    assert "(command line): consolidate.sleep_limit moved to consolidate.schedule.limit" in msg
    # A nested key under a moved section is renamed the same way.
    with pytest.raises(ConfigError, match="serve.generator.autoscaling.max_replicas"):
        load_config(None, ["serve.generator_autoscaling.max_replicas=3"])


def test_the_old_weight_sync_switch_names_its_new_place_everywhere(tmp_path):
    with pytest.raises(ConfigError, match=r"\(command line\): serve.weight_sync moved to "):
        load_config(None, ["serve.weight_sync=stream"])
    # An old file with a new-style override: the old key is named, not a parse error.
    p = tmp_path / "old.yaml"
    p.write_text("serve:\n  weight_sync: stream\n")
    with pytest.raises(ConfigError, match=f"{p}:2: serve.weight_sync moved to serve.weight_sync"):
        load_config(p, ["serve.weight_sync.mode=stream"])
    assert load_config(None, ["serve.weight_sync.mode=stream"]).serve.weight_sync.mode == "stream"
