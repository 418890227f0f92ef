"""What every driftloop Flink job shares: the environment, checkpoints and Kafka table DDL.

Jars, brokers and folders come from ``Settings``; nothing here hard-codes a path or a host.
Runs inside ``.venv-flink`` (PyFlink is imported lazily so the DDL builders stay testable).
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from driftloop.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

KAFKA_TXN_TIMEOUT_MS = 600_000
"""Below the broker's transaction.max.timeout.ms (15 min by default)."""

VALUE_CHARSET = "ISO-8859-1"
"""Record values cross into Python as Latin-1 strings (one char per byte, lossless): PyFlink
converts BYTES element by element (~0.5 us per byte), strings natively; see flink/README.md."""


def value_in(v: str | None) -> bytes | None:
    """A record value as it reached Python (Latin-1 string) back to its bytes."""
    return v.encode(VALUE_CHARSET) if v is not None else None


def value_out(b: bytes | None) -> str | None:
    """Bytes for a record value in the form the sink tables take."""
    return b.decode(VALUE_CHARSET) if b is not None else None


def lib_dir(settings: Settings) -> Path:
    return settings.flink_lib_dir or settings.cache_dir / "flink" / "lib"


def plugins_dir(settings: Settings) -> Path:
    return lib_dir(settings).parent / "plugins"


def checkpoint_root(settings: Settings, app: str) -> str:
    """Checkpoint URL of one application (a folder URI or an s3:// URL)."""
    base = settings.flink_checkpoint_dir or (settings.state_dir / "flink" / "checkpoints").as_uri()
    if "://" not in base:
        base = Path(base).resolve().as_uri()
    return f"{base.rstrip('/')}/{app}"


def latest_checkpoint(root_url: str, settings: Settings | None = None) -> str | None:
    """The newest completed checkpoint (``chk-N`` with ``_metadata``) under a root: a local
    folder, or an ``s3://`` URL (listed through the blob store; returned as Flink names it)."""
    parsed = urlparse(root_url)
    if parsed.scheme in ("s3", "s3a"):
        return _latest_s3_checkpoint(root_url, settings or Settings())
    if parsed.scheme != "file":
        return None
    root = Path(parsed.path)
    found = [p.parent for p in root.glob("*/chk-*/_metadata")]
    if not found:
        return None
    newest = max(found, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])))
    return newest.as_uri()


def _latest_s3_checkpoint(root_url: str, settings: Settings) -> str | None:
    from driftloop.blob import open_store

    url = "s3://" + root_url.split("://", 1)[1].rstrip("/")
    parent, app = url.rsplit("/", 1)
    if parent == "s3:/":  # the root is a bare bucket
        parent, app = url, ""
    store = open_store(parent, settings)
    found: list[tuple[int, str]] = []
    for key in store.list(f"{app}/" if app else ""):
        parts = key.split("/")
        if (len(parts) >= 3 and parts[-1] == "_metadata" and parts[-2].startswith("chk-")
                and parts[-2][4:].isdigit()):
            found.append((int(parts[-2][4:]), "/".join(parts[:-1])))
    if not found:
        return None
    # Checkpoint numbers restart per job; a restored job continues from the restored number,
    # so the highest number is the newest of the retained ones.
    _, rel = max(found)
    return flink_path(f"{parent}/{rel}")


def jvm_environment(settings: Settings) -> dict[str, str]:
    """Process environment the PyFlink gateway JVM (and thread-mode Python) need."""
    site_packages = [p for p in site.getsitepackages() if p.endswith("site-packages")]
    log_dir = settings.state_dir / "flink" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        # Thread mode runs Python inside the JVM: it must find pemja, pyflink and driftloop.
        "PYTHONPATH": os.pathsep.join([*site_packages, str(PROJECT_ROOT)]),
        "FLINK_LOG_DIR": str(log_dir),
    }
    if settings.flink_execution_mode == "process":
        # On a local mini-cluster PyFlink runs process-mode workers inside this client
        # process ("loopback"), one interpreter and one GIL for every subtask; separate
        # worker processes let parallelism 2 use two cores.
        env["_python_worker_execution_mode"] = "process"
    return env


def flink_config(settings: Settings, app: str, *, streaming: bool = True) -> dict[str, str]:
    """The Flink configuration of one application, as plain key/values."""
    # Locally the jars come from make setup; in a cluster image they sit in Flink's lib/.
    jars = sorted(lib_dir(settings).glob("*.jar"))
    conf = {
        "pipeline.name": f"driftloop-{app}",
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "python.execution-mode": settings.flink_execution_mode,
        "python.fn-execution.bundle.size": str(settings.flink_bundle_size),
        "python.fn-execution.bundle.time": str(settings.flink_bundle_time_ms),
        "python.fn-execution.arrow.batch.size": str(settings.flink_bundle_size),
        "parallelism.default": str(settings.flink_parallelism),
        "pipeline.operator-chaining.enabled": str(settings.flink_operator_chaining).lower(),
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000000",
        "restart-strategy.fixed-delay.delay": "1 s",
        "taskmanager.memory.process.size": "1600m",
        "taskmanager.numberOfTaskSlots": "4",
        "table.exec.resource.default-parallelism": str(settings.flink_parallelism),
    }
    if jars:
        conf["pipeline.jars"] = ";".join(p.resolve().as_uri() for p in jars)
    if streaming:
        root = checkpoint_root(settings, app)
        conf |= {
            "execution.checkpointing.interval": f"{settings.flink_checkpoint_interval_ms} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.storage": "filesystem",
            "execution.checkpointing.dir": flink_path(root),
            "execution.checkpointing.unaligned.enabled":
                str(settings.flink_unaligned_checkpoints).lower(),
            "execution.checkpointing.aligned-checkpoint-timeout":
                f"{settings.flink_aligned_checkpoint_timeout_ms} ms",
            "execution.checkpointing.num-retained": "2",
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.state-recovery.ignore-unclaimed-state": "true",
        }
        if settings.flink_rest_port:
            # The mini-cluster's REST API: job state and restarts for `driftloop status`.
            conf |= {"rest.bind-address": "127.0.0.1", "rest.address": "127.0.0.1",
                     "rest.bind-port": str(settings.flink_rest_port),
                     "rest.port": str(settings.flink_rest_port)}
        restore = latest_checkpoint(root, settings)
        if restore:
            conf["execution.state-recovery.path"] = restore
    conf |= s3_config(settings)
    if streaming and settings.flink_target == "session":
        from flink.jobs.session import remote_config

        return remote_config(conf, settings)
    return conf


def s3_config(settings: Settings) -> dict[str, str]:
    """Keys the S3 file-system plugin reads (endpoint, path-style access, credentials)."""
    conf: dict[str, str] = {}
    if settings.s3_endpoint_url:
        conf["s3.endpoint"] = settings.s3_endpoint_url
        conf["s3.path.style.access"] = "true"
        conf["s3.connection.ssl.enabled"] = str(
            settings.s3_endpoint_url.startswith("https")).lower()
    if settings.s3_access_key_id:
        conf["s3.access-key"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        conf["s3.secret-key"] = settings.s3_secret_access_key.get_secret_value()
    conf["s3.endpoint.region"] = settings.s3_region
    # Keep directory markers: S3-compatible servers backed by folders refuse to delete them.
    conf["s3.directory.marker.retention"] = "keep"
    return conf


def flink_path(url: str) -> str:
    """A blob-store URL as Flink names it (``s3://`` goes through the s3a plugin)."""
    return "s3a://" + url[len("s3://"):] if url.startswith("s3://") else url


def create_env(
    settings: Settings, app: str, *, streaming: bool = True
) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    """A local execution environment (mini-cluster) with the jobs' configuration."""
    os.environ.update(jvm_environment(settings))
    from pyflink.common import Configuration
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    conf = Configuration()
    for k, v in flink_config(settings, app, streaming=streaming).items():
        conf.set_string(k, v)
    if streaming and settings.flink_target == "session":
        from flink.jobs.session import remote_environment

        env = remote_environment(conf._j_configuration, settings)
    else:
        env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(settings.flink_parallelism)
    _init_file_systems(conf, plugins_dir(settings))
    if not streaming:
        env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    mode = EnvironmentSettings.in_streaming_mode() if streaming else None
    t_env = (StreamTableEnvironment.create(env, environment_settings=mode) if mode
             else StreamTableEnvironment.create(env))
    return env, t_env


def _init_file_systems(conf: Any, plugins: Path) -> None:
    """Load our file-system plugins (s3a) into the local JVM.

    PyFlink points FLINK_PLUGINS_DIR at the wheel's own folder, and a mini-cluster does
    not initialize file systems from plugins itself (a real cluster's TaskManagers do),
    so the jobs load the plugin folder resolved by make setup explicitly.
    """
    if not plugins.is_dir():
        return
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    jconf = conf._j_configuration
    core = jvm.org.apache.flink.core
    finder = core.plugin.DirectoryBasedPluginFinder(jvm.java.io.File(str(plugins)).toPath())
    patterns = jvm.org.apache.flink.configuration.CoreOptions.getPluginParentFirstLoaderPatterns(
        jconf)
    manager = core.plugin.DefaultPluginManager(finder.findPlugins(), patterns)
    core.fs.FileSystem.initialize(jconf, manager)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def with_clause(options: dict[str, Any]) -> str:
    return "WITH (" + ", ".join(f"{_quote(k)}={_quote(str(v))}" for k, v in options.items()) + ")"


KAFKA_SHADED_PREFIX = "org.apache.flink.kafka.shaded."
"""flink-sql-connector-kafka relocates the Kafka client: JAAS login modules carry this prefix."""


def kafka_security_options(settings: Settings) -> dict[str, str]:
    """The Kafka clients' security settings as connector options (``properties.*``)."""
    from driftloop.bus import java_properties

    props = java_properties(settings, shaded_prefix=KAFKA_SHADED_PREFIX)
    return {f"properties.{k}": v for k, v in props.items()}


def kafka_source_ddl(name: str, topic: str, settings: Settings, group: str) -> str:
    """A Kafka source table: key, value, CloudEvents headers, record time, processing time."""
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "properties.group.id": f"{settings.flink_group_id}-{group}",
        "properties.isolation.level": "read_committed",
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "group-offsets",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.raw.charset": VALUE_CHARSET,
        "value.fields-include": "EXCEPT_KEY",
        **kafka_security_options(settings),
    }
    return (
        f"CREATE TEMPORARY TABLE `{name}` (k BYTES, v STRING, "
        "headers MAP<STRING, BYTES> METADATA, "
        "ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', "
        "part INT METADATA FROM 'partition' VIRTUAL, off BIGINT METADATA FROM 'offset' VIRTUAL, "
        "pt AS PROCTIME()) "
        + with_clause(options)
    )


def kafka_sink_ddl(name: str, topics: list[str], settings: Settings, txn_prefix: str) -> str:
    """A transactional Kafka sink that writes each row to the topic named in its ``tp`` column."""
    options = {
        "connector": "kafka",
        "topic": ";".join(topics),
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "properties.transaction.timeout.ms": str(KAFKA_TXN_TIMEOUT_MS),
        # The agreed record limit (topics take a little more for framing): see README.
        "properties.max.request.size": str(settings.kafka_max_message_bytes),
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{settings.flink_group_id}-{txn_prefix}",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.raw.charset": VALUE_CHARSET,
        "value.fields-include": "EXCEPT_KEY",
        **kafka_security_options(settings),
    }
    return (
        f"CREATE TEMPORARY TABLE `{name}` (k BYTES, v STRING, "
        "headers MAP<STRING, BYTES> METADATA, tp STRING METADATA FROM 'topic') "
        + with_clause(options)
    )
