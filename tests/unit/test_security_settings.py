"""Secret settings stay masked wherever settings are shown, yet reach child processes; every
Kafka client in driftloop is built from one security config, the Flink connector included."""

from __future__ import annotations

import ast
import inspect
import re
import zipfile
from pathlib import Path

import pytest

from driftloop import bus
from driftloop.settings import PROJECT_ROOT, Settings

SECRETS = {"s3_secret_access_key": "s3-secret-1f2e", "intake_tokens": "in-tok-a,in-tok-b",
           "kafka_password": "kafka-pw-77aa", "function_tokens": "fn-tok-a,fn-tok-b"}


def secret_settings(tmp_path: Path, **extra) -> Settings:
    return Settings(state_dir=tmp_path, **SECRETS, **extra)


def test_secret_fields_are_secret_types():
    for name in SECRETS:
        assert "SecretStr" in str(Settings.model_fields[name].annotation), name


def test_secrets_are_masked_in_repr_str_and_dumps(tmp_path):
    s = secret_settings(tmp_path)
    shown = [repr(s), str(s), str(s.model_dump()), s.model_dump_json(),
             str(s.model_dump(mode="json"))]
    for text in shown:
        for value in SECRETS.values():
            for part in value.split(","):
                assert part not in text


def test_children_get_the_secrets(tmp_path):
    from driftloop.local.components.flink import settings_env as flink_env
    from driftloop.retrain.backends import job_env
    from driftloop.serving.server import settings_env as serving_env

    s = secret_settings(tmp_path)
    for env in (s.to_env(), flink_env(s), job_env(s), serving_env(s)):
        for name, value in SECRETS.items():
            assert env[f"DRIFTLOOP_{name.upper()}"] == value
        rebuilt = Settings.from_env(env)
        # (some children get the blob URL with its default applied)
        assert rebuilt.model_dump(exclude={"blob_url"}) == s.model_dump(exclude={"blob_url"})
        assert rebuilt.kafka_password.get_secret_value() == SECRETS["kafka_password"]
    assert Settings.model_validate(s.reveal(mode="json")) == s
    assert s.intake_token_set == {"in-tok-a", "in-tok-b"}
    assert s.function_token_list == ["fn-tok-a", "fn-tok-b"]


def test_security_config_per_protocol(tmp_path):
    plain = bus.client_config(Settings(state_dir=tmp_path), "x")
    assert plain["security_protocol"] == "PLAINTEXT" and "sasl_plain_password" not in plain
    ssl = bus.security_config(Settings(state_dir=tmp_path, kafka_security_protocol="SSL",
                                       kafka_ca_file=tmp_path / "ca.pem"))
    assert ssl == {"security_protocol": "SSL", "ssl_check_hostname": True,
                   "ssl_cafile": str(tmp_path / "ca.pem")}
    sasl = bus.security_config(secret_settings(
        tmp_path, kafka_security_protocol="SASL_SSL", kafka_username="u"))
    assert sasl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == ("u", "kafka-pw-77aa")
    with pytest.raises(ValueError, match="USERNAME"):
        bus.security_config(Settings(state_dir=tmp_path, kafka_security_protocol="SASL_SSL"))


def test_flink_connector_gets_the_same_security(tmp_path):
    from flink.jobs.common import KAFKA_SHADED_PREFIX, kafka_sink_ddl, kafka_source_ddl

    s = Settings(state_dir=tmp_path, kafka_security_protocol="SASL_SSL", kafka_username="fl",
                 kafka_password='p"w\\x', kafka_ca_file=tmp_path / "ca.pem")
    for ddl in (kafka_source_ddl("t", "driftloop.feedback", s, "g"),
                kafka_sink_ddl("o", ["a"], s, "x")):
        assert "'properties.security.protocol'='SASL_SSL'" in ddl
        assert "'properties.sasl.mechanism'='SCRAM-SHA-512'" in ddl
        assert "'properties.ssl.truststore.type'='PEM'" in ddl
        assert f"'properties.ssl.truststore.location'='{tmp_path / 'ca.pem'}'" in ddl
        module = KAFKA_SHADED_PREFIX + "org.apache.kafka.common.security.scram.ScramLoginModule"
        jaas = f'{module} required username="fl" password="p\\"w\\\\x";'  # JAAS-escaped
        assert f"'properties.sasl.jaas.config'='{jaas}'" in ddl
    # The connector jar make setup installs relocates the client under that prefix.
    (jar,) = (Settings().cache_dir / "flink" / "lib").glob("flink-sql-connector-kafka-*.jar")
    names = zipfile.ZipFile(jar).namelist()
    assert (module.replace(".", "/") + ".class") in names


KAFKA_CLASSES = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}


def test_every_kafka_client_in_driftloop_takes_client_config():
    """A client built beside the config builder would miss the security settings."""
    found = 0
    for top in ("driftloop", "seldon", "flink", "functions"):
        for path in (PROJECT_ROOT / top).rglob("*.py"):
            source = path.read_text()
            tree = ast.parse(source)
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef):
                    continue
                fn_src = ast.get_source_segment(source, fn) or ""
                for call in ast.walk(fn):
                    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                            and call.func.id in KAFKA_CLASSES):
                        continue
                    found += 1
                    starred = [ast.get_source_segment(source, k.value) or ""
                               for k in call.keywords if k.arg is None]
                    direct = any("client_config(" in s for s in starred)
                    via_config = "config" in starred and (
                        re.search(r"\*\*(bus\.)?client_config\(", fn_src) is not None
                        or "= producer_config(" in fn_src)
                    assert direct or via_config, f"{path}:{call.lineno} bypasses client_config"
                    assert not any(k.arg == "bootstrap_servers" for k in call.keywords), path
    assert found >= 6
    # producer_config, which make_producer builds from, starts from client_config itself.
    from driftloop import bus

    assert "**client_config(" in inspect.getsource(bus.producer_config)
