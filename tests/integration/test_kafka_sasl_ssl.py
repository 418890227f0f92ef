"""Kafka client security against a real broker whose only client listener is SASL_SSL
(SCRAM-SHA-512 over TLS; certificates made with keytool here, credentials written at
storage format). Every kind of driftloop client (admin, producer, group consumer, the
drift window reader, feedback-intake) works with the settings alone; the same settings as
Java client properties (what the Flink Kafka connector gets) read the records too; a wrong
password, a missing CA or a plaintext client get nothing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.errors import Unavailable
from driftloop.http import Request
from driftloop.local.kafka import KafkaBroker
from driftloop.local.process import free_port, spawn, stop_pid, wait_until
from driftloop.settings import Settings

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-pw-4f1c"
CLIENT_USER = "driftloop-test"
CLIENT_PASSWORD = "client-pw-9b2e\"quote"
STORE_PASSWORD = "store-pw-7d3a"


def keytool(*args: str, cwd: Path) -> None:
    subprocess.run(["keytool", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


def make_certificates(folder: Path) -> tuple[Path, Path]:
    """A test CA and a broker key pair it signed for 127.0.0.1: (ca.pem, broker.p12)."""
    folder.mkdir(parents=True, exist_ok=True)
    common = ("-storetype", "PKCS12", "-storepass", STORE_PASSWORD)
    keytool("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
            "-dname", "CN=driftloop-test-ca", "-ext", "bc:c", "-ext", "ku:c=keyCertSign,cRLSign",
            "-validity", "2", "-keystore", "ca.p12", *common, cwd=folder)
    keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", *common,
            "-file", "ca.pem", cwd=folder)
    keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
            "-dname", "CN=127.0.0.1", "-validity", "2", "-keystore", "broker.p12", *common,
            cwd=folder)
    keytool("-certreq", "-alias", "broker", "-keystore", "broker.p12", *common,
            "-file", "broker.csr", cwd=folder)
    keytool("-gencert", "-alias", "ca", "-keystore", "ca.p12", *common, "-infile", "broker.csr",
            "-outfile", "broker.crt", "-rfc", "-validity", "2",
            "-ext", "SAN=ip:127.0.0.1,dns:localhost",
            "-ext", "ku:c=digitalSignature,keyEncipherment", "-ext", "eku=serverAuth",
            cwd=folder)
    keytool("-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem",
            "-keystore", "broker.p12", *common, cwd=folder)
    keytool("-importcert", "-noprompt", "-alias", "broker", "-file", "broker.crt",
            "-keystore", "broker.p12", *common, cwd=folder)
    return folder / "ca.pem", folder / "broker.p12"


@dataclasses.dataclass(frozen=True)
class SaslSslBroker(KafkaBroker):
    """The stack's broker with one SASL_SSL listener for clients and brokers alike."""

    keystore: Path = Path()

    def write_config(self) -> None:
        super().write_config()
        props = dict(line.split("=", 1) for line in self.config_path.read_text().splitlines())
        jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="admin" password="{ADMIN_PASSWORD}";')
        props |= {
            "listeners": f"SASL_SSL://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.host}:{self.port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": STORE_PASSWORD,
            "ssl.key.password": STORE_PASSWORD,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.keystore.parent / "ca.pem"),
            "ssl.client.auth": "none",
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def format_storage(self) -> None:
        """Format with the SCRAM credentials of the broker itself and of the test client."""
        self.write_config()
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "--cluster-id=dGVzdC1zYXNsLXNzbA",
                       "-c", str(self.config_path), "--ignore-formatted",
                       "--add-scram", f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]",
                       "--add-scram",
                       f'SCRAM-SHA-512=[name={CLIENT_USER},password="{CLIENT_PASSWORD}"]'),
            check=True, capture_output=True, timeout=120,
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker of its own (started here, stopped at the end) and the client settings."""
    root = tmp_path_factory.mktemp("kafka-sasl-ssl")
    ca, keystore = make_certificates(root / "certs")
    broker = SaslSslBroker(libs_dir=Settings().cache_dir / "kafka" / "libs",
                           data_dir=root / "data", port=free_port(),
                           controller_port=free_port(), heap="384m", keystore=keystore)
    log = root / "broker.log"
    broker.format_storage()
    proc = spawn(broker.argv(), log_path=log)
    try:
        wait_until(broker.healthy, timeout_s=120, what="kafka (SASL_SSL)",
                   alive=lambda: proc.poll() is None, log_path=log)
        yield Settings(
            kafka_bootstrap=broker.bootstrap, state_dir=root / "state",
            kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_username=CLIENT_USER, kafka_password=CLIENT_PASSWORD, kafka_ca_file=ca,
            topic_partitions=1,
        )
    finally:
        stop_pid(proc.pid)


def feedback(i: int) -> ev.Event:
    return ev.new_event(ev.FEEDBACK, "sasl-test", {"prediction_id": f"p-{i}", "model": "digits",
                                                   "truth": i % 10},
                        id=f"fb-{i}", datacontenttype=ev.JSON)


def test_every_client_kind_works_over_sasl_ssl(secured: Settings):
    from driftloop.monitoring.window import read_topic

    created = bus.ensure_topics(secured, [topics.FEEDBACK, topics.DEADLETTER], partitions=1)
    assert set(created) == {topics.FEEDBACK, topics.DEADLETTER}

    producer = bus.make_producer(secured)
    try:
        assert bus.publish(producer, topics.FEEDBACK, [feedback(i) for i in range(3)]) == 3
    finally:
        producer.close()

    from driftloop.intake import IntakeService

    intake = IntakeService(secured)
    try:
        headers, body = ev.to_http_binary(feedback(3))
        r = intake.handle(Request.post(headers, body))
        assert r.status == 202, r.body
    finally:
        intake.close()

    consumer = bus.make_consumer(secured, [topics.FEEDBACK], "sasl-test-group")
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(seen) < 4 and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                seen += [ev.from_kafka(r.value, r.headers, r.key).id for r in recs]
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(seen) == ["fb-0", "fb-1", "fb-2", "fb-3"]

    window = read_topic(secured, topics.FEEDBACK, window_s=3600, max_records=100)
    assert len(window.records) == 4


def test_java_client_properties_read_the_topic(secured: Settings, tmp_path: Path):
    """The properties the Flink Kafka connector gets (unshaded here: Kafka's own Java
    console consumer) authenticate and verify the broker with the same settings."""
    bus.ensure_topics(secured, [topics.LABELED], partitions=1)
    producer = bus.make_producer(secured)
    try:
        bus.publish(producer, topics.LABELED, [feedback(100)])
    finally:
        producer.close()
    props = bus.java_properties(secured)
    assert props["security.protocol"] == "SASL_SSL"
    assert props["ssl.truststore.type"] == "PEM"
    config = tmp_path / "client.properties"
    # A Java properties file: backslashes (the JAAS quoting) are escaped once more.
    config.write_text("".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n"
                              for k, v in props.items()))
    broker = KafkaBroker(libs_dir=Settings().cache_dir / "kafka" / "libs", data_dir=tmp_path,
                         port=0, controller_port=0)
    out = subprocess.run(
        broker._java("org.apache.kafka.tools.consumer.ConsoleConsumer",
                     "--bootstrap-server", secured.kafka_bootstrap, "--topic", topics.LABELED,
                     "--from-beginning", "--max-messages", "1", "--timeout-ms", "60000",
                     "--consumer.config", str(config)),
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    values = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [v["prediction_id"] for v in values] == ["p-100"]


FLINK_READ = """
from driftloop.settings import Settings
from flink.jobs.common import create_env, kafka_source_ddl

s = Settings()
env, t_env = create_env(s, "sasl-probe", streaming=False)
ddl = kafka_source_ddl("src", "driftloop.labeled", s, "sasl-probe")
t_env.execute_sql(ddl[:-1] + ", 'scan.bounded.mode'='latest-offset')")
with t_env.execute_sql("SELECT v FROM src").collect() as rows:
    for row in rows:
        print("VALUE " + row[0], flush=True)
"""


def test_flink_kafka_connector_reads_over_sasl_ssl(secured: Settings, tmp_path: Path):
    """The Flink job's own Kafka table (kafka_source_ddl, the shaded connector) reads the
    secured topic with nothing but the settings."""
    import os

    from driftloop.local.components.flink import python, settings_env
    from driftloop.settings import PROJECT_ROOT

    bus.ensure_topics(secured, [topics.LABELED], partitions=1)
    producer = bus.make_producer(secured)
    try:
        bus.publish(producer, topics.LABELED, [feedback(200)])
    finally:
        producer.close()
    settings = secured.model_copy(update={"state_dir": tmp_path})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")},
           **settings_env(settings), "PYTHONPATH": str(PROJECT_ROOT)}
    out = subprocess.run([str(python(settings)), "-c", FLINK_READ], env=env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    values = [json.loads(line[6:]) for line in out.stdout.splitlines()
              if line.startswith("VALUE ")]
    assert "p-200" in [v["prediction_id"] for v in values]
    # Flink's own logs and output do not carry the password (JAAS config is a secret).
    logs = [out.stdout, out.stderr, *(f.read_text(errors="replace")
                                      for f in (tmp_path / "flink").rglob("*") if f.is_file())]
    assert not [t for t in logs if CLIENT_PASSWORD in t]


def refused(settings: Settings) -> None:
    with pytest.raises((Unavailable, Exception)) as e:
        p = bus.make_producer(settings, bootstrap_timeout_ms=8_000, max_block_ms=8_000)
        try:
            bus.publish(p, topics.FEEDBACK, [feedback(999)], timeout_s=8)
        finally:
            p.close(timeout=2)
    return e.value


def test_wrong_password_missing_ca_and_plaintext_get_nothing(secured: Settings):
    before = len(bus_records(secured))
    refused(secured.model_copy(update={"kafka_password": Settings(
        kafka_password="not-the-password").kafka_password}))
    refused(secured.model_copy(update={"kafka_ca_file": None}))
    refused(secured.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}))
    assert len(bus_records(secured)) == before


def test_sasl_without_a_user_is_a_clear_error(secured: Settings):
    with pytest.raises(ValueError, match="DRIFTLOOP_KAFKA_USERNAME"):
        bus.client_config(secured.model_copy(update={"kafka_username": ""}), "x")


def bus_records(settings: Settings) -> list[object]:
    from driftloop.monitoring.window import read_topic

    return read_topic(settings, topics.FEEDBACK, window_s=3600, max_records=1000).records
