"""The local-stack component of the Flink application and the settings hand-over."""

from __future__ import annotations

import json

from driftloop.local.components import flink
from driftloop.settings import Settings


def test_component_lists_pipelines_and_passes_settings(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "connector.jar").write_bytes(b"")
    s = Settings(
        state_dir=tmp_path / "state",
        flink_venv=venv,
        flink_lib_dir=lib,
        kafka_bootstrap="127.0.0.1:1234",
        s3_endpoint_url=None,
    )
    *cluster, spec = flink.components(s)
    assert [c.name for c in cluster] == ["flink-jobmanager", "flink-taskmanager-1"]
    assert spec.name == "flink" and spec.order == 30
    assert spec.extra["pipelines"] == ["preprocess", "join", "archive"]
    assert spec.argv[1:3] == ["-m", "flink.jobs.app"]
    assert spec.env["DRIFTLOOP_KAFKA_BOOTSTRAP"] == "127.0.0.1:1234"
    # The stack's application goes to the session cluster, whatever the default target.
    assert spec.env["DRIFTLOOP_FLINK_TARGET"] == "session"
    assert "DRIFTLOOP_S3_ENDPOINT_URL" not in spec.env
    assert not spec.health()
    ready = s.state_dir / "flink" / "ready.json"
    ready.parent.mkdir(parents=True)
    ready.write_text(json.dumps({"job_id": "x"}))
    assert spec.health()
    rebuilt = Settings(
        **{
            k[len("DRIFTLOOP_") :].lower(): v
            for k, v in spec.env.items()
            if k.startswith("DRIFTLOOP_")
        }
    )
    assert rebuilt.model_dump() == s.model_copy(update={"flink_target": "session"}).model_dump()


def test_component_absent_without_environment(tmp_path):
    assert flink.components(Settings(flink_venv=tmp_path / "none", state_dir=tmp_path)) == []


def test_archive_left_to_consumer_when_asked(tmp_path):
    s = Settings(archive_engine="consumer", state_dir=tmp_path)
    assert flink.pipelines(s) == ["preprocess", "join"]


def test_job_stuck_in_restarts_is_unhealthy():
    now = 1_000_000_000
    running = {
        "state": "RUNNING",
        "now": now,
        "timestamps": {"RUNNING": now - 500_000, "RESTARTING": 0},
    }
    assert flink.job_health(running, grace_s=120) == (True, "running")
    looping = {
        "state": "RUNNING",
        "now": now,
        "timestamps": {"RUNNING": now - 1_000, "RESTARTING": now - 3_000},
    }
    ok, why = flink.job_health(looping, grace_s=120)
    assert not ok and "restarted 3 s ago" in why
    assert not flink.job_health({"state": "RESTARTING", "now": now}, grace_s=120)[0]
    long_ago = {
        "state": "RUNNING",
        "now": now,
        "timestamps": {"RUNNING": now - 600_000, "RESTARTING": now - 601_000},
    }
    assert flink.job_health(long_ago, grace_s=120)[0]


def test_health_asks_the_job_when_a_rest_url_is_known(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "c.jar").write_bytes(b"")
    s = Settings(state_dir=tmp_path / "state", flink_venv=venv, flink_lib_dir=tmp_path / "lib")
    *_, spec = flink.components(s)
    ready = s.state_dir / "flink" / "ready.json"
    ready.parent.mkdir(parents=True)
    # A REST URL nobody answers on: the job's state is unknown, so not healthy.
    ready.write_text(json.dumps({"job_id": "x", "rest_url": "http://127.0.0.1:9"}))
    assert not spec.health()


def test_session_cluster_components_one_scrape_port_each(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "c.jar").write_bytes(b"")
    s = Settings(
        state_dir=tmp_path / "state",
        flink_venv=venv,
        flink_lib_dir=tmp_path / "lib",
        flink_taskmanagers=3,
        flink_metrics_port=19249,
        flink_rest_port=18081,
        flink_jobmanager_rpc_port=16123,
    )
    specs = {c.name: c for c in flink.components(s)}
    assert list(specs) == [
        "flink-jobmanager",
        "flink-taskmanager-1",
        "flink-taskmanager-2",
        "flink-taskmanager-3",
        "flink",
    ]
    assert [specs[n].metrics for n in list(specs)[:4]] == [
        "127.0.0.1:19249",
        "127.0.0.1:19250",
        "127.0.0.1:19251",
        "127.0.0.1:19252",
    ]
    assert specs["flink"].metrics == ""  # the submitter holds no operator; the cluster does
    assert set(specs["flink-jobmanager"].ports) == {18081, 16123, 19249}
    tm = specs["flink-taskmanager-2"]
    assert "metrics.reporter.prom.port=19251" in tm.argv
    assert "taskmanager.resource-id=taskmanager-2" in tm.argv
    # Started before the submitter, each waited on: JobManager, then TaskManagers.
    assert specs["flink-jobmanager"].order < tm.order < specs["flink"].order
    # Nobody answers on the REST port: no TaskManager is registered, no job is known.
    assert not tm.health() and not specs["flink-jobmanager"].health()
    assert specs["flink"].details is not None
    assert specs["flink"].details() == {"jobs": None}


def test_status_names_each_job_state_and_last_checkpoint():
    from driftloop.cli import _job_line

    job = {
        "name": "driftloop-preprocess-join-archive",
        "state": "RUNNING",
        "last_checkpoint": {"id": 42, "age_s": 1.4, "duration_ms": 37},
        "failed_checkpoints": 3,
    }
    assert _job_line(job) == (
        "flink job driftloop-preprocess-join-archive: RUNNING, "
        "last checkpoint #42 1 s ago (37 ms), 3 failed"
    )
    fresh = {"name": "driftloop-join", "state": "INITIALIZING", "last_checkpoint": None}
    assert _job_line(fresh) == "flink job driftloop-join: INITIALIZING, no checkpoint yet"


def test_cluster_layout_is_a_distribution_like_the_image(tmp_path):
    """lib/ = the wheel's jars + flink-python + the connector; plugins/ = the reporter + S3;
    conf/config.yaml from the settings, private (it holds the S3 secret)."""
    from driftloop.local.flink_cluster import PROMETHEUS_REPORTER, ClusterLayout

    wheel = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "pyflink"
    for d in ("lib", "opt", "conf", "plugins/metrics-prometheus", "plugins/metrics-jmx"):
        (wheel / d).mkdir(parents=True)
    (wheel / "lib" / "flink-dist-2.2.1.jar").write_bytes(b"")
    (wheel / "opt" / "flink-python-2.2.1.jar").write_bytes(b"")
    (wheel / "conf" / "log4j-console.properties").write_text("rootLogger.level = INFO\n")
    (wheel / "conf" / "config.yaml").write_text(
        "env:\n  java:\n    opts:\n      all: --add-opens=x\n"
    )
    cache = tmp_path / "cache"
    (cache / "lib").mkdir(parents=True)
    (cache / "lib" / "kafka-connector.jar").write_bytes(b"")
    (cache / "plugins" / "s3-fs-hadoop").mkdir(parents=True)
    s = Settings(
        state_dir=tmp_path / "state",
        flink_venv=tmp_path / "venv",
        flink_lib_dir=cache / "lib",
        flink_rest_port=18081,
        s3_endpoint_url="http://127.0.0.1:9000",
        s3_access_key_id="key",
        s3_secret_access_key="s3cr3t",
    )
    layout = ClusterLayout(s)
    layout.prepare()
    layout.prepare()  # again, as every `driftloop up` does: rebuilt, not piled up
    assert sorted(p.name for p in layout.lib.iterdir()) == [
        "flink-dist-2.2.1.jar",
        "flink-python-2.2.1.jar",
        "kafka-connector.jar",
    ]
    assert sorted(p.name for p in layout.plugins.iterdir()) == [
        "metrics-prometheus",
        "s3-fs-hadoop",
    ]
    conf = layout.conf / "config.yaml"
    assert conf.stat().st_mode & 0o777 == 0o600
    import yaml

    values = yaml.safe_load(conf.read_text())
    assert values["metrics.reporter.prom.factory.class"] == PROMETHEUS_REPORTER
    assert values["rest.port"] == "18081" and values["env.java.opts.all"] == "--add-opens=x"
    assert values["s3.secret-key"] == "s3cr3t" and values["s3.endpoint"] == "http://127.0.0.1:9000"
    assert (layout.conf / "log4j-console.properties").exists()
    env = layout.env()
    assert env["FLINK_LIB_DIR"] == str(layout.lib) and env["FLINK_PLUGINS_DIR"] == str(
        layout.plugins
    )
    assert str(wheel.parent) in env["PYTHONPATH"].split(":")


def test_ha_topology_adds_zookeeper_and_jobmanager_high_availability(tmp_path):
    """'ha': a ZooKeeper server from the wheel starts before the JobManagers (a leader and a
    standby), and every cluster process reads the HA keys (quorum on loopback, store beside
    the checkpoints); 'light' has none of them."""
    import yaml

    from driftloop.local.flink_cluster import ClusterLayout

    wheel = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "pyflink"
    for d in ("lib", "opt", "conf", "bin"):
        (wheel / d).mkdir(parents=True)
    (wheel / "conf" / "config.yaml").write_text("")
    (tmp_path / "venv" / "bin").mkdir()
    (tmp_path / "venv" / "bin" / "python").write_text("")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "c.jar").write_bytes(b"")
    s = Settings(state_dir=tmp_path / "state", flink_venv=tmp_path / "venv",
                 flink_lib_dir=tmp_path / "lib", topology="ha", flink_zookeeper_port=12181,
                 flink_standby_rest_port=18096, flink_metrics_port=19249,
                 flink_jobmanager_rpc_port=16123, flink_checkpoint_dir="s3://b/checkpoints")
    specs = {c.name: c for c in flink.components(s)}
    assert list(specs)[:3] == ["flink-zookeeper", "flink-jobmanager", "flink-jobmanager-standby"]
    zk = specs["flink-zookeeper"]
    assert zk.order < specs["flink-jobmanager"].order and zk.ports == (12181,)
    assert zk.argv[-3:] == [str(wheel / "bin" / "zookeeper.sh"), "start-foreground", "1"]
    assert not zk.health()  # nobody serves on the port
    # The standby: its own REST and metrics ports (after both TaskManagers'), any RPC port.
    standby = specs["flink-jobmanager-standby"]
    assert "rest.port=18096" in standby.argv and "high-availability.jobmanager.port=0" in (
        standby.argv)
    assert standby.ports == (18096, 19252) and standby.metrics == "127.0.0.1:19252"
    assert [c.name for c in flink.components(s) if c.name.startswith("flink-taskmanager")] == [
        "flink-taskmanager-1", "flink-taskmanager-2"]
    ClusterLayout(s).prepare()
    conf = ClusterLayout(s).conf
    values = yaml.safe_load((conf / "config.yaml").read_text())
    assert {k: v for k, v in values.items() if k.startswith("high-availability.")} == {
        "high-availability.type": "zookeeper",
        "high-availability.zookeeper.quorum": "127.0.0.1:12181",
        "high-availability.storageDir": "s3a://b/checkpoints/ha",
        "high-availability.cluster-id": "/driftloop",
        "high-availability.jobmanager.port": "16123",
        "high-availability.zookeeper.client.session-timeout": "5 s",
        "high-availability.zookeeper.client.connection-timeout": "5 s",
        "high-availability.zookeeper.client.tolerate-suspended-connections": "true",
    }
    assert values["heartbeat.interval"] == "1 s" and values["heartbeat.timeout"] == "15 s"
    zoo = dict(line.split("=", 1) for line in (conf / "zoo.cfg").read_text().splitlines())
    assert zoo["clientPort"] == "12181" and zoo["clientPortAddress"] == "127.0.0.1"
    assert zoo["dataDir"] == str(s.state_dir / "flink" / "zookeeper")
    # A 5 s session fits ZooKeeper's bounds (2 to 20 ticks).
    assert 2 * int(zoo["tickTime"]) <= 5_000 <= 20 * int(zoo["tickTime"])

    light = s.model_copy(update={"topology": "light"})
    assert not {"flink-zookeeper", "flink-jobmanager-standby"} & {
        c.name for c in flink.components(light)}
    ClusterLayout(light).prepare()
    values = yaml.safe_load((conf / "config.yaml").read_text())
    assert not any(k.startswith("high-availability") for k in values)
