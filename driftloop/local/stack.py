"""``driftloop up | down | status``: start, stop and inspect the local stack.

What ``up`` started is recorded in ``<state_dir>/stack.json`` (name, pid, endpoint, log),
so ``down`` stops exactly that and ``status`` reports on it. Components come from
``driftloop.local.components`` and start in order, each waited on until healthy; those of
one order start together (none depends on another of its order).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftloop.errors import StackError
from driftloop.local.components import ComponentSpec, discover, selected
from driftloop.local.process import (
    pid_alive,
    port_is_free,
    spawn,
    stop_pids,
    wait_until,
)
from driftloop.settings import Settings


def start_batches(specs: list[ComponentSpec]) -> list[list[ComponentSpec]]:
    """Consecutive specs of one ``order`` form a batch ``up`` starts together: a component
    depends only on components of a lower order."""
    batches: list[list[ComponentSpec]] = []
    for spec in specs:
        if batches and batches[-1][0].order == spec.order:
            batches[-1].append(spec)
        else:
            batches.append([spec])
    return batches


def proc_alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    endpoint: str
    healthy: bool
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "endpoint": self.endpoint,
                "healthy": self.healthy, **self.extra}


class Stack:
    """The processes of one local stack, rooted at ``settings.state_dir``."""

    def __init__(self, settings: Settings, specs: list[ComponentSpec] | None = None) -> None:
        self.settings = settings
        self._specs = specs

    @property
    def specs(self) -> list[ComponentSpec]:
        if self._specs is None:
            self._specs = selected(self.settings)
        return self._specs

    @property
    def state_file(self) -> Path:
        return self.settings.state_dir / "stack.json"

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs"

    # ------------------------------------------------------------------ records

    def _read(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads(self.state_file.read_text())["components"])
        except FileNotFoundError:
            return []
        except (ValueError, KeyError) as e:
            raise StackError(f"{self.state_file} is unreadable ({e}); remove it") from e

    def _write(self, records: list[dict[str, Any]]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        state = {"topology": self.settings.topology, "components": records}
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)

    def recorded_settings(self) -> Settings:
        """The settings with the topology the running stack was started with (``status``
        and ``start_component`` then know its components without being told again)."""
        try:
            topology = json.loads(self.state_file.read_text()).get("topology")
        except (OSError, ValueError, AttributeError):
            return self.settings
        if topology in ("light", "ha") and topology != self.settings.topology:
            return self.settings.model_copy(update={"topology": topology})
        return self.settings

    def running(self) -> list[dict[str, Any]]:
        return [r for r in self._read() if r.get("pid") and pid_alive(int(r["pid"]))]

    # ------------------------------------------------------------------ verbs

    def up(self, *, progress: Callable[[str], object] | None = None) -> list[ComponentStatus]:
        """Start every component; raise ``StackError`` (and stop what started) on failure."""
        alive = self.running()
        if alive:
            raise AlreadyUp(f"the stack is already up ({len(alive)} components, "
                            f"state in {self.settings.state_dir}); run driftloop down first")
        self._preflight()
        records: list[dict[str, Any]] = []
        try:
            for batch in start_batches(self.specs):
                if progress:
                    progress(f"starting {', '.join(spec.name for spec in batch)}")
                records += self._start_together(batch)
                self._write(records)
        except BaseException:
            self._stop_records(records)
            self.state_file.unlink(missing_ok=True)
            raise
        return self.status()

    def _preflight(self) -> None:
        busy = [(s.name, p) for s in self.specs for p in s.ports if not port_is_free(p)]
        if busy:
            what = ", ".join(f"{name} needs port {port}" for name, port in busy)
            raise StackError(f"port busy: {what} (something else listens there; "
                             "stop it or set DRIFTLOOP_*_PORT)")

    def _start(self, spec: ComponentSpec) -> dict[str, Any]:
        return self._start_together([spec])[0]

    def _start_together(self, specs: list[ComponentSpec]) -> list[dict[str, Any]]:
        """Prepare every spec, launch each, wait until each started, then run their
        ``after_start`` in order; on any failure stop all of them."""
        launched: list[tuple[ComponentSpec, subprocess.Popen[bytes], dict[str, Any], float]] = []
        try:
            for spec in specs:  # all before any starts: one may rewrite what another reads
                if spec.prepare is not None:
                    spec.prepare()
            for spec in specs:
                log_path = self.log_dir / f"{spec.name}.log"
                started = time.monotonic()
                # Children build the same settings: everything set explicitly, then the spec's.
                env = {**self.settings.to_env(), **spec.env}
                proc = spawn(spec.argv, log_path=log_path, env=env, cwd=spec.cwd)
                record: dict[str, Any] = {"name": spec.name, "pid": proc.pid,
                                          "endpoint": spec.endpoint, "log": str(log_path),
                                          **dict(spec.extra)}
                if spec.metrics:
                    record["scrape"] = spec.metrics  # Prometheus job ``name`` scrapes it
                if spec.stop_group:
                    record["stop_group"] = spec.stop_group  # ``down`` stops the group at once
                launched.append((spec, proc, record, started))
            for spec, proc, record, started in launched:
                wait_until(spec.started or spec.health, timeout_s=spec.start_timeout_s,
                           what=spec.name, alive=proc_alive(proc), log_path=Path(record["log"]))
                record["start_s"] = round(time.monotonic() - started, 2)
            for spec, _, _, _ in launched:
                if spec.after_start is not None:
                    spec.after_start()
        except BaseException:
            stop_pids([proc.pid for _, proc, _, _ in launched])
            raise
        return [record for _, _, record, _ in launched]

    def start_component(self, name: str) -> dict[str, Any]:
        """Start one component of the running stack again, after it exited or was killed:
        the same path as ``up`` (prepare, start, wait until healthy, after_start); its
        record in ``stack.json`` is replaced. A component still running is an error."""
        records = self._read()
        at = next((i for i, r in enumerate(records) if r.get("name") == name), None)
        if at is None:
            raise StackError(f"{name} is not a component of the running stack "
                             f"(state in {self.settings.state_dir})")
        pid = records[at].get("pid")
        if pid and pid_alive(int(pid)):
            raise StackError(f"{name} is running (pid {pid}); stop it first")
        spec = next((s for s in selected(self.recorded_settings()) if s.name == name), None)
        if spec is None:
            raise StackError(f"{name} is not among the stack's components")
        record = self._start(spec)
        records = self._read()  # what changed meanwhile (another component restarted)
        records[next(i for i, r in enumerate(records) if r.get("name") == name)] = record
        self._write(records)
        return record

    def down(self) -> list[str]:
        """Stop what ``up`` started, last first; return the names stopped."""
        records = self._read()
        stopped = self._stop_records(records)
        self.state_file.unlink(missing_ok=True)
        return stopped

    @staticmethod
    def _stop_records(records: list[dict[str, Any]]) -> list[str]:
        """Stop the running ones, last first; consecutive records of one ``stop_group``
        together (signalled at once, then awaited)."""
        batches: list[list[dict[str, Any]]] = []
        for r in reversed(records):
            group = r.get("stop_group")
            if group and batches and batches[-1][0].get("stop_group") == group:
                batches[-1].append(r)
            else:
                batches.append([r])
        stopped = []
        for batch in batches:
            alive = [r for r in batch if r.get("pid") and pid_alive(int(r["pid"]))]
            if alive:
                stop_pids([int(r["pid"]) for r in alive])
                stopped += [str(r["name"]) for r in alive]
        return stopped

    def status(self) -> list[ComponentStatus]:
        try:
            specs = {s.name: s for s in discover(self.recorded_settings())}
        except StackError:
            specs = {}
        out = []
        for r in self._read():
            pid = int(r["pid"]) if r.get("pid") else None
            alive = pid is not None and pid_alive(pid)
            spec = specs.get(r["name"])
            healthy = alive
            if alive and spec is not None:
                try:
                    healthy = bool(spec.health())
                except Exception:
                    healthy = False
            extra = {k: v for k, v in r.items() if k not in ("name", "pid", "endpoint")}
            if alive and spec is not None and spec.details is not None:
                try:
                    extra |= dict(spec.details())
                except Exception as e:  # status reports; it never fails on one component
                    extra["details_error"] = str(e)
            out.append(ComponentStatus(r["name"], pid, r.get("endpoint", ""), healthy, extra))
        return out


class AlreadyUp(StackError):
    """``up`` found the stack running."""
