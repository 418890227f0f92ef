"""Hostile and careless command lines: each is one line on stderr and a non-zero exit,
never a traceback (the CLI in-process, typer's runner; no servers)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.local.process import free_port


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_error(r, code: int, needle: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert needle in r.output, r.output


@pytest.fixture
def frames(tmp_path):
    ref = tmp_path / "ref.csv"
    cur = tmp_path / "cur.csv"
    ref.write_text("x\n" + "\n".join(str(i % 7) for i in range(50)))
    cur.write_text("x\n" + "\n".join(str(i % 5) for i in range(50)))
    return ["--reference", str(ref), "--current", str(cur)]


@pytest.mark.parametrize(("args", "needle"), [
    (["--drift-share", "nan"], "share in (0, 1]"),
    (["--drift-share", "7"], "share in (0, 1]"),
    (["--drift-share", "-1"], "share in (0, 1]"),
    (["--nan-policy", "weird"], "not one of raise, omit"),
    (["--rule", "x=ks:nan"], "finite number"),
    (["--rule", "x=ks:-0.5"], "finite number"),
    (["--rule", "x=bogus:0.1"], "is not one of ks"),
])
def test_drift_refuses_invalid_options(frames, args, needle):
    r = run("drift", *frames, *args)
    assert_one_line_error(r, 2, needle)


def test_drift_with_valid_options_still_runs(frames):
    r = run("drift", *frames, "--drift-share", "1", "--nan-policy", "omit",
            "--rule", "x=psi:0.2", "--json")
    assert r.exit_code == 0, r.output
    assert "dataset_drift" in json.loads(r.stdout) or json.loads(r.stdout)


def test_an_io_error_reading_a_file_is_one_line(frames):
    r = run("drift", "--reference", "/proc/self/mem", *frames[2:])
    assert_one_line_error(r, 2, "Input/output error")


@pytest.mark.parametrize("content", ["[1e400]", "[[NaN, 1]]", "[" * 50_000 + "]" * 50_000,
                                     "[1" + "0" * 5000 + "]", '[["a", 1]]'])
def test_predict_refuses_tensors_no_server_can_take(tmp_path, content):
    f = tmp_path / "t.json"
    f.write_text(content)
    env = {"DRIFTLOOP_SERVING_URL": f"http://127.0.0.1:{free_port()}"}
    r = run("predict", "--model", "digits", str(f), env=env)
    assert r.exit_code == 2, (r.output, r.exception)
    assert "Traceback" not in r.output and "error:" in r.output
    assert "unreachable" not in r.output  # refused before any request


@pytest.mark.parametrize("args", [
    ["predict", "--model", "../digits", "x.json"],
    ["predict", "--model", "digits", "--version", "../1", "x.json"],
    ["report", "--model", "../etc"],
    ["drift-profile", "--model", "a/../b", "--data", "x.csv"],
    ["train", "--model", "..", "--run-id", "x"],
    ["promote", "--model", "digits", "--version", "../../1"],
    ["rollback", "--model", "digits\n"],
])
def test_names_with_path_characters_are_refused(args):
    r = run(*args)
    assert r.exit_code == 2, (r.output, r.exception)
    assert "Traceback" not in r.output and "Invalid value" in r.output


def test_batch_concurrency_zero_is_refused():
    r = run("predict", "--model", "digits", "--batch", "in", "--out", "out", "--concurrency", "0")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "--concurrency" in r.output and "greater than or equal to 1" in r.output


def test_a_bad_setting_from_the_environment_is_one_line(tmp_path):
    r = run("predict", "--model", "digits", str(tmp_path / "x.json"),
            env={"DRIFTLOOP_SERVING_TIMEOUT_S": "-1"})
    assert_one_line_error(r, 2, "DRIFTLOOP_SERVING_TIMEOUT_S")


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_report_out_must_be_a_folder(tmp_path, kind):
    out = tmp_path / "taken"
    if kind == "file":
        out.write_text("keep me")
    else:
        os.mkfifo(out)
    r = run("report", "--model", "digits", "--out", str(out),
            env={"DRIFTLOOP_BLOB_URL": (tmp_path / "blobs").as_uri()})
    assert_one_line_error(r, 2, "is not a folder")
    if kind == "file":
        assert out.read_text() == "keep me"
