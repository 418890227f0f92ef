"""Names that become paths/keys/topics, topic names, and settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop import topics
from driftloop.naming import is_safe_id, is_safe_segment, safe_segment
from driftloop.settings import Settings


@pytest.mark.parametrize("name", ["digits", "ocr-v2", "a", "m.1_x", "a" * 64])
def test_safe_names(name):
    assert safe_segment(name) == name


@pytest.mark.parametrize(
    "name", ["", "../x", "..", "a/b", "A", "-a", "a-", "a..b", "a b", "a" * 65, None, 5, "é",
             "digits\n", "1\n", "\ndigits", "digits\r\n"]
)
def test_unsafe_names(name):
    assert not is_safe_segment(name)
    with pytest.raises(ValueError, match="must be 1-64"):
        safe_segment(name)


@pytest.mark.parametrize("value", ["fb-1", "a", "x" * 256, "https://app.example/x?y=1", "!~"])
def test_safe_ids(value):
    assert is_safe_id(value)


@pytest.mark.parametrize("value", ["", "x" * 257, "fb 1", "fb-1\n", "\u0000invalid", "café",
                                   "tab\there", "\x7f", None, 7])
def test_unsafe_ids(value):
    assert not is_safe_id(value)


def test_topics_follow_the_contract():
    assert topics.raw("audio") == "driftloop.raw.audio"
    assert topics.preprocessed("image") == "driftloop.preprocessed.image"
    assert set(topics.all_topics()) >= {
        "driftloop.predictions", "driftloop.feedback", "driftloop.labeled",
        "driftloop.events", "driftloop.deadletter", "driftloop.raw.audio",
    }
    with pytest.raises(ValueError):
        topics.raw("../etc")


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.setenv("DRIFTLOOP_INTAKE_TOKENS", "a, b,,")
    monkeypatch.setenv("DRIFTLOOP_INTAKE_MAX_BODY_BYTES", "2048")
    s = Settings()
    assert s.kafka_bootstrap == "10.0.0.1:9092"
    assert s.intake_token_set == {"a", "b"}
    assert s.intake_max_body_bytes == 2048
    assert s.resolved_blob_url == (tmp_path / "st" / "blobs").as_uri()
    assert "a, b" not in repr(s)  # tokens never printed


def test_settings_defaults_match_design(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(k)
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.state_dir == Path(".driftloop").resolve()
    assert s.intake_max_body_bytes == 1024 * 1024


def test_local_stack_default_ports_are_distinct(monkeypatch):
    # Two components with the same default port: `driftloop up` fails on a fresh machine.
    for k in list(__import__("os").environ):
        if k.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(k)
    s = Settings()
    ports = {n: getattr(s, n) for n in Settings.model_fields if n.endswith("_port")}
    by_port: dict[int, list[str]] = {}
    for name, port in ports.items():
        if port:
            by_port.setdefault(port, []).append(name)
    assert {p: n for p, n in by_port.items() if len(n) > 1} == {}


def test_a_loop_stack_takes_no_default_port(tmp_path):
    """The e2e loop stack runs beside whatever else is up (a demo, another suite): every
    port it listens on is a free one, none the default."""
    from driftloop.retrain.stackrun import loop_env

    s = Settings.from_env(loop_env(tmp_path))
    defaults = Settings.model_fields
    taken = {n: getattr(s, n) for n in defaults if n.endswith("_port")}
    assert {n: p for n, p in taken.items() if p == defaults[n].default} == {}


def test_settings_reject_bad_values(monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_INTAKE_MAX_BODY_BYTES", "-1")
    with pytest.raises(ValueError):
        Settings()


def test_every_setting_is_documented():
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []


def test_settings_round_trip_through_child_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DRIFTLOOP_KAFKA_PORT", "19999")
    s = Settings(state_dir=tmp_path, intake_tokens="t1")
    env = s.to_env()
    assert env["DRIFTLOOP_KAFKA_PORT"] == "19999"
    assert env["DRIFTLOOP_STATE_DIR"] == str(tmp_path)
    monkeypatch.delenv("DRIFTLOOP_KAFKA_PORT")
    back = Settings.from_env({**env, "PATH": "/bin"})
    assert (back.kafka_port, back.state_dir, back.intake_token_set) == (19999, tmp_path, {"t1"})
