"""``driftloop down``: the nodes of one stop group (a Kafka quorum) are signalled at once
and awaited together, the other components one by one, last started first. The nodes here
are small processes that, like a quorum's last broker, shut down cleanly only once every
node of the group was asked to: stopped one by one, the first would wait in vain."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from driftloop.local.components.kafka import components
from driftloop.local.process import spawn
from driftloop.local.stack import Stack
from driftloop.settings import Settings

NODE = """
import signal, sys, time
from pathlib import Path
folder, name, peers = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
def term(*_):
    seen = sorted(p.stem for p in folder.glob("*.term"))
    (folder / f"{name}.term").write_text(",".join(seen))
    deadline = time.monotonic() + 30
    while not all((folder / f"{p}.term").exists() for p in peers):
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.02)
    (folder / f"{name}.clean").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
(folder / f"{name}.ready").touch()
while True:
    time.sleep(1)
"""


def test_down_stops_a_quorum_together_and_the_rest_last_first(tmp_path: Path) -> None:
    folder = tmp_path / "marks"
    folder.mkdir()
    script = tmp_path / "node.py"
    script.write_text(NODE)
    brokers = ["kafka-1", "kafka-2", "kafka-3"]
    names = [*brokers, "feedback-intake"]
    records = []
    for name in names:
        peers = ",".join(brokers) if name in brokers else name
        proc = spawn([sys.executable, str(script), str(folder), name, peers],
                     log_path=tmp_path / f"{name}.log")
        record = {"name": name, "pid": proc.pid}
        if name in brokers:
            record["stop_group"] = "kafka"
        records.append(record)
    deadline = time.monotonic() + 30
    while not all((folder / f"{n}.ready").exists() for n in names):
        assert time.monotonic() < deadline, "the nodes did not start"
        time.sleep(0.05)
    settings = Settings(state_dir=tmp_path / "state")
    (tmp_path / "state").mkdir()
    Stack(settings)._write(records)

    started = time.monotonic()
    stopped = Stack(settings).down()

    assert time.monotonic() - started < 15  # no node waited out the stop timeout
    assert sorted(stopped) == sorted(names) and stopped[0] == "feedback-intake"
    assert all((folder / f"{n}.clean").exists() for n in names)  # none was killed
    # The intake was stopped before any broker was asked to.
    assert (folder / "feedback-intake.term").read_text() == ""
    assert not (Settings(state_dir=tmp_path / "state").state_dir / "stack.json").exists()


def test_the_brokers_of_a_quorum_form_one_stop_group(tmp_path: Path) -> None:
    ha = Settings(state_dir=tmp_path, topology="ha", kafka_port=19092,
                  kafka_2_port=19192, kafka_3_port=19292, kafka_controller_port=19093,
                  kafka_2_controller_port=19193, kafka_3_controller_port=19293)
    groups = {c.name: c.stop_group for c in components(ha)}
    assert groups == {"kafka-1": "kafka", "kafka-2": "kafka", "kafka-3": "kafka",
                      "kafka-lag": ""}
    light = {c.name: c.stop_group for c in components(Settings(state_dir=tmp_path))}
    assert light == {"kafka": "", "kafka-lag": ""}
