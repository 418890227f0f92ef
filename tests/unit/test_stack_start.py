"""``driftloop up`` starts the components of one order together: each is launched before
any is waited on, and their ``after_start`` run once all of them started. The processes
here serve only once every peer of their order runs (as the nodes of a quorum do), so a
start one by one would wait in vain on the first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.errors import StackError
from driftloop.local.components import ComponentSpec, discover
from driftloop.local.stack import Stack, start_batches
from driftloop.settings import Settings

NODE = """
import sys, time
from pathlib import Path
folder, name = Path(sys.argv[1]), sys.argv[2]
(folder / f"{name}.up").touch()
while True:
    time.sleep(1)
"""


def _spec(folder: Path, script: Path, name: str, order: int, peers: list[str],
          log: list[str]) -> ComponentSpec:
    return ComponentSpec(
        name=name,
        argv=[sys.executable, str(script), str(folder), name],
        order=order,
        endpoint=name,
        health=lambda: all((folder / f"{p}.up").exists() for p in peers),
        start_timeout_s=20,
        after_start=lambda: log.append(
            f"{name} after {sorted(p.stem for p in folder.glob('*.up'))}"),
    )


def test_up_starts_one_order_together_and_runs_after_start_once_all_started(
        tmp_path: Path) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    script = tmp_path / "node.py"
    script.write_text(NODE)
    log: list[str] = []
    quorum = ["node-1", "node-2", "node-3"]
    specs = [*(_spec(folder, script, n, 10, quorum, log) for n in quorum),
             _spec(folder, script, "client", 20, ["client", *quorum], log)]
    stack = Stack(Settings(state_dir=tmp_path / "state"), specs=specs)
    try:
        stack.up()
        assert [r["name"] for r in stack._read()] == [*quorum, "client"]
        # the quorum's after_start ran once all three ran, before the next order started
        assert log == [f"{n} after {quorum}" for n in quorum] + [
            f"client after {sorted(['client', *quorum])}"]
    finally:
        stack.down()


def test_a_batch_that_does_not_start_is_stopped_whole(tmp_path: Path) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    script = tmp_path / "node.py"
    script.write_text(NODE)
    specs = [_spec(folder, script, "node-1", 10, ["node-1"], []),
             _spec(folder, script, "node-2", 10, ["node-2", "never"], [])]
    specs[1] = ComponentSpec(**{**specs[1].__dict__, "start_timeout_s": 2})
    stack = Stack(Settings(state_dir=tmp_path / "state"), specs=specs)
    with pytest.raises(StackError, match="node-2"):
        stack.up()
    assert (folder / "node-1.up").exists()  # it ran, and was stopped with its batch
    left = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True)
    assert left.stdout == "" and not stack.state_file.exists()


def test_the_standby_jobmanager_starts_after_the_leader() -> None:
    """Started together, either JobManager could win the first election; the fault matrix
    kills ``flink-jobmanager`` as the leader."""
    batches = [[s.name for s in b] for b in start_batches(discover(Settings(topology="ha")))]
    leader = next(i for i, b in enumerate(batches) if "flink-jobmanager" in b)
    standby = next(i for i, b in enumerate(batches) if "flink-jobmanager-standby" in b)
    assert batches[leader] == ["flink-jobmanager"] and standby > leader
    assert ["kafka-1", "kafka-2", "kafka-3"] in batches


def test_a_port_run_lies_below_the_ephemeral_range_free_and_not_handed_out_twice() -> None:
    """Flink's reporters bind the run's ports one by one; inside the ephemeral range an
    outgoing connection took a TaskManager's port between the check and its bind."""
    from driftloop.local.process import ephemeral_ports, free_port_run, port_is_free

    lo, _ = ephemeral_ports()
    starts = [free_port_run(4) for _ in range(50)]
    ports = [p for s in starts for p in range(s, s + 4)]
    assert max(ports) < lo
    assert len(set(ports)) == len(ports)
    assert all(port_is_free(p) for p in ports)
