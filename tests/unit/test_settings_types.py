"""Typed settings: lists from the environment's comma form, fixed choices refused with a clear
error, secrets masked everywhere but ``reveal``, and the child-process round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import NoDecode

from driftloop.settings import PROJECT_ROOT, Settings

LISTS = {
    "DRIFTLOOP_COMPONENTS": ("kafka, prometheus,,", ("kafka", "prometheus")),
    "DRIFTLOOP_FLINK_PIPELINES": ("preprocess,join", ("preprocess", "join")),
    "DRIFTLOOP_SERVING_MODELS": (" digits ,ocr", ("digits", "ocr")),
    "DRIFTLOOP_FLINK_METRICS_TARGETS": (
        "127.0.0.1:9249, 127.0.0.1:9250",
        ("127.0.0.1:9249", "127.0.0.1:9250"),
    ),
    "DRIFTLOOP_FUNCTION_METRICS_TARGETS": ("127.0.0.1:8082", ("127.0.0.1:8082",)),
    "DRIFTLOOP_FUNCTION_OIDC_SUBJECTS": (
        "system:serviceaccount:driftloop:*,x:*",
        ("system:serviceaccount:driftloop:*", "x:*"),
    ),
}
SECRETS = {
    "s3_secret_access_key": "s3-sec-9c1d",
    "kafka_password": "kpw-41b7",
    "intake_tokens": "in-a-77e0,in-b-77e0",
    "function_tokens": "fn-a-03f2,fn-b-03f2",
}


@pytest.fixture
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(k)
    return monkeypatch


def test_lists_come_from_the_comma_form(clean_env):
    for name, (value, _) in LISTS.items():
        clean_env.setenv(name, value)
    clean_env.setenv("DRIFTLOOP_SERVING_MODEL_TIMEOUTS", "ocr=20, speech=45.5")
    clean_env.setenv("DRIFTLOOP_INTAKE_TOKENS", "a, b,,")
    s = Settings()
    for name, (_, parsed) in LISTS.items():
        assert getattr(s, name.removeprefix("DRIFTLOOP_").lower()) == parsed, name
    assert s.serving_model_timeouts == {"ocr": 20.0, "speech": 45.5}
    assert s.intake_token_set == {"a", "b"}


def test_one_item_empty_and_json_array(clean_env):
    clean_env.setenv("DRIFTLOOP_SERVING_MODELS", "digits")
    clean_env.setenv("DRIFTLOOP_COMPONENTS", "")
    clean_env.setenv("DRIFTLOOP_FLINK_PIPELINES", '["join", "archive"]')
    s = Settings()
    assert (s.serving_models, s.components, s.flink_pipelines) == (
        ("digits",),
        (),
        ("join", "archive"),
    )


def test_every_collection_field_takes_the_comma_form():
    """pydantic-settings JSON-decodes collection fields from the environment unless told not
    to: a new list setting without NoDecode would refuse ``a,b``."""
    collections = [
        n
        for n, f in Settings.model_fields.items()
        if typing.get_origin(f.annotation) in (list, tuple, set, frozenset, dict)
    ]
    assert len(collections) >= 9
    assert [n for n in collections if NoDecode not in Settings.model_fields[n].metadata] == []


@pytest.mark.parametrize(
    ("name", "value", "choices"),
    [
        ("flink_execution_mode", "fast", "'thread' or 'process'"),
        ("archive_engine", "kafka", "'auto', 'consumer' or 'flink'"),
        ("flink_image_mode", "CMYK", "'RGB' or 'L'"),
        ("drift_nan_policy", "ignore", "'raise' or 'omit'"),
        ("retrain_backend", "slurm", "'kubernetes'"),
        ("kafka_security_protocol", "TLS", "'SASL_SSL'"),
        ("kafka_sasl_mechanism", "GSSAPI", "'SCRAM-SHA-512'"),
        ("flink_pipelines", "preprocess,nope", "'preprocess', 'join' or 'archive'"),
    ],
)
def test_fixed_choices_are_refused_naming_the_variable(clean_env, name, value, choices):
    from driftloop.cli import settings_error

    assert "Literal" in str(Settings.model_fields[name].annotation), name
    clean_env.setenv(f"DRIFTLOOP_{name.upper()}", value)
    with pytest.raises(ValidationError) as e:
        Settings()
    line = settings_error(e.value)
    assert line.startswith(f"DRIFTLOOP_{name.upper()}"), line
    assert choices in line and "Input should be" in line, line


@pytest.mark.parametrize("value", ["ocr=soon", "OCR=1", "ocr", "ocr=-1", "../x=2"])
def test_bad_model_timeouts_are_refused(clean_env, value):
    clean_env.setenv("DRIFTLOOP_SERVING_MODEL_TIMEOUTS", value)
    with pytest.raises(ValidationError, match="serving_model_timeouts"):
        Settings()


def test_every_secret_is_a_secret_type():
    words = ("token", "password", "secret")
    named = [
        n for n in Settings.model_fields if any(w in n for w in words) and not n.endswith("_file")
    ]
    assert sorted(named) == sorted(SECRETS)
    for name in named:
        assert "SecretStr" in str(Settings.model_fields[name].annotation), name


def test_secrets_never_shown_except_by_reveal(tmp_path):
    s = Settings(state_dir=tmp_path, **SECRETS)
    shown = [
        repr(s),
        str(s),
        str(s.model_dump()),
        s.model_dump_json(),
        json.dumps(s.model_dump(mode="json")),
        repr(s.intake_tokens),
        str(s.function_tokens),
    ]
    values = [part for v in SECRETS.values() for part in v.split(",")]
    assert [v for v in values for text in shown if v in text] == []
    revealed = s.reveal(mode="json")
    assert {k: revealed[k] for k in SECRETS} == SECRETS
    assert isinstance(s.kafka_password, SecretStr)
    assert all(isinstance(t, SecretStr) for t in s.function_tokens)


def test_to_env_writes_lists_back_in_the_comma_form(clean_env, tmp_path):
    s = Settings(
        state_dir=tmp_path,
        components="kafka, prometheus",
        flink_pipelines="join",
        serving_model_timeouts="ocr=20",
        function_oidc_subjects="a:*,b:*",
        flink_metrics_targets="127.0.0.1:9249",
        **SECRETS,
    )
    env = s.to_env()
    assert env["DRIFTLOOP_COMPONENTS"] == "kafka,prometheus"
    assert env["DRIFTLOOP_FLINK_PIPELINES"] == "join"
    assert env["DRIFTLOOP_SERVING_MODEL_TIMEOUTS"] == "ocr=20.0"
    assert env["DRIFTLOOP_FUNCTION_OIDC_SUBJECTS"] == "a:*,b:*"
    assert env["DRIFTLOOP_INTAKE_TOKENS"] == SECRETS["intake_tokens"]
    assert Settings.from_env(env) == s
    assert Settings.model_validate(s.reveal()) == s


def test_every_child_environment_rebuilds_the_lists(clean_env, tmp_path):
    from driftloop.local.components.flink import settings_env as flink_env
    from driftloop.retrain.backends import job_env
    from driftloop.serving.server import settings_env as serving_env

    s = Settings(
        state_dir=tmp_path,
        components="kafka,prometheus",
        serving_models="digits",
        flink_pipelines="preprocess,archive",
        serving_model_timeouts="ocr=2.5",
        function_metrics_targets="h:1,h:2",
        **SECRETS,
    )
    for env in (flink_env(s), job_env(s), serving_env(s)):
        assert env["DRIFTLOOP_COMPONENTS"] == "kafka,prometheus"
        rebuilt = Settings.from_env(env)
        assert rebuilt.model_dump(exclude={"blob_url"}) == s.model_dump(exclude={"blob_url"})


def test_a_child_process_rebuilds_the_same_settings(clean_env, tmp_path):
    """The local stack's way: ``to_env`` into a child's environment, ``Settings()`` there."""
    s = Settings(
        state_dir=tmp_path,
        components="kafka,prometheus",
        serving_models="digits,ocr",
        serving_model_timeouts="ocr=20",
        flink_execution_mode="process",
        kafka_port=19999,
        promote_bake_s=1.5,
        **SECRETS,
    )
    code = (
        "from driftloop.settings import Settings; import json; "
        "print(json.dumps(Settings().reveal(mode='json')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **s.to_env()},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(PROJECT_ROOT),
    )
    assert Settings.model_validate(json.loads(out.stdout)) == s


def test_copies_check_their_updates(tmp_path):
    s = Settings(state_dir=tmp_path)
    copy = s.model_copy(update={"components": "kafka, prometheus", "kafka_port": "19998"})
    assert (copy.components, copy.kafka_port, s.components) == (("kafka", "prometheus"), 19998, ())
    assert copy.to_env()["DRIFTLOOP_COMPONENTS"] == "kafka,prometheus"
    with pytest.raises(ValidationError, match="flink_execution_mode"):
        s.model_copy(update={"flink_execution_mode": "fast"})
