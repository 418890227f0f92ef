"""MLServer with driftloop's models, and the streaming predictor, in the local stack."""

from __future__ import annotations

import sys

from driftloop.local.components import ComponentSpec
from driftloop.local.components.kafka import bootstrap_for
from driftloop.local.process import http_ok
from driftloop.settings import PROJECT_ROOT, Settings


def components(settings: Settings) -> list[ComponentSpec]:
    from driftloop.serving import server

    if not server.installed():
        return []
    s = settings.model_copy(update={"kafka_bootstrap": bootstrap_for(settings)})
    folder = s.state_dir / "serving" / "server"
    url = f"http://127.0.0.1:{s.serving_http_port}"
    models = s.serving_model_list

    def prepare() -> None:
        from driftloop.blob import open_store
        from driftloop.registry import Registry
        from driftloop.serving.bootstrap import ensure_models

        ensure_models(Registry(open_store(s.resolved_blob_url, s)), models)
        server.write_config(s, folder)

    stream_env = {**server.settings_env(s), "PYTHONUNBUFFERED": "1"}
    stream_metrics = (f"127.0.0.1:{s.serving_stream_metrics_port}"
                      if s.serving_stream_metrics_port else "")
    return [
        ComponentSpec(
            name="mlserver",
            argv=server.argv(folder),
            order=40,
            endpoint=url,
            health=lambda: server.ready(url, models, timeout_s=1.0),
            env=server.server_env(s),
            cwd=folder,
            ports=(s.serving_http_port, s.serving_grpc_port, s.serving_metrics_port),
            start_timeout_s=120,
            prepare=prepare,
            metrics=f"127.0.0.1:{s.serving_metrics_port}",
            extra={
                "protocol": "v2",
                "grpc": f"127.0.0.1:{s.serving_grpc_port}",
                "metrics": f"http://127.0.0.1:{s.serving_metrics_port}/metrics",
                "models": {m: {"infer": f"{url}/v2/models/{m}/infer",
                               "ready": f"{url}/v2/models/{m}/ready"} for m in models},
                "repository": f"{url}/v2/repository/index",
            },
        ),
        ComponentSpec(
            name="serving-stream",
            argv=[sys.executable, "-m", "driftloop.serving.stream"],
            order=41,
            endpoint=f"{s.kafka_bootstrap} -> {url}",
            health=(lambda: http_ok(f"http://{stream_metrics}/metrics")) if stream_metrics
            else (lambda: True),
            env={**stream_env,
                 "DRIFTLOOP_SERVING_STREAM_METRICS_PORT": str(s.serving_stream_metrics_port)},
            cwd=PROJECT_ROOT,
            ports=(s.serving_stream_metrics_port,) if stream_metrics else (),
            metrics=stream_metrics,
            start_timeout_s=10,
            extra={"consumes": "driftloop.preprocessed.*", "produces": "driftloop.predictions"},
        ),
    ]
