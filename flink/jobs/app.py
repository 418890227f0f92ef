"""The driftloop Flink application: the chosen pipelines in one job, submitted to the session
cluster (``flink_target=session``, what the local stack runs) or run on a mini-cluster.

``python -m flink.jobs.app --pipelines preprocess,join,archive [--ready-file PATH]``
(inside .venv-flink). It restores from the newest retained checkpoint of the same set of
pipelines, so a killed application picks up where its last checkpoint left it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from driftloop.settings import Settings
from driftloop.settings.fields import split_commas

PIPELINES = ("preprocess", "join", "archive")


def app_name(pipelines: list[str]) -> str:
    return "-".join(p for p in PIPELINES if p in pipelines)


def parse_pipelines(value: str | Sequence[str]) -> list[str]:
    """``--pipelines``' comma form (parsed as the setting is), or the setting's tuple."""
    chosen = [str(p) for p in split_commas(value)] if isinstance(value, str) else list(value)
    unknown = sorted(set(chosen) - set(PIPELINES))
    if unknown or not chosen:
        raise SystemExit(f"unknown pipelines {unknown}; choose from {', '.join(PIPELINES)}")
    return chosen


def parse_modalities(value: str | None) -> tuple[str, ...]:
    from driftloop import topics

    if not value:
        return topics.MODALITIES
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(topics.MODALITIES))
    if unknown or not chosen:
        raise SystemExit(f"unknown modalities {unknown}; choose from "
                         f"{', '.join(topics.MODALITIES)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipelines", default=None, help="comma separated; default from settings")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="written (job id, pipelines) once the job is submitted")
    parser.add_argument("--modalities", default=None,
                        help="preprocess only these raw topics, comma separated; default all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    pipelines = parse_pipelines(args.pipelines or settings.flink_pipelines)
    name = app_name(pipelines)

    from flink.jobs.common import checkpoint_root, create_env, latest_checkpoint

    if settings.flink_target == "session":
        from flink.jobs.session import find_active_job, wait_for_end

        adopted = find_active_job(settings, f"driftloop-{name}")
        if adopted:  # a restarted submitter: the job never stopped, do not run it twice
            logging.info("adopted running job %s (%s)", name, adopted)
            _write_ready(args.ready_file, settings, adopted, pipelines, 0.0, None)
            return 0 if wait_for_end(settings, adopted) == "FINISHED" else 1
    restored_from = latest_checkpoint(checkpoint_root(settings, name), settings)
    t0 = time.monotonic()
    env, t_env = create_env(settings, name)
    t_env.get_config().set("table.exec.state.ttl", f"{settings.archive_dedup_days * 24} h")
    stmt = t_env.create_statement_set()
    if "preprocess" in pipelines:
        from flink.jobs import preprocess

        preprocess.add_pipeline(t_env, stmt, settings, parse_modalities(args.modalities))
    if "join" in pipelines:
        from flink.jobs import join

        join.add_pipeline(t_env, stmt, settings)
    if "archive" in pipelines:
        from flink.jobs import archive

        archive.add_pipeline(t_env, stmt, settings)
    stmt.attach_as_datastream()
    client = env.execute_async(f"driftloop-{name}")
    job_id = str(client.get_job_id())
    startup = time.monotonic() - t0
    logging.info("submitted %s (%s) in %.1f s", name, job_id, startup)
    _write_ready(args.ready_file, settings, job_id, pipelines, startup, restored_from)
    client.get_job_execution_result().result()
    return 0


def _write_ready(path: Path | None, settings: Settings, job_id: str, pipelines: list[str],
                 startup: float, restored_from: str | None) -> None:
    """The ready file the stack and the tests wait for (written atomically)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rest = f"http://127.0.0.1:{settings.flink_rest_port}" if settings.flink_rest_port else None
    tmp.write_text(json.dumps({"job_id": job_id, "pipelines": pipelines,
                               "submit_s": round(startup, 2), "rest_url": rest,
                               "target": settings.flink_target,
                               "restored_from": restored_from}))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
