"""The simulator log: format, torn last line, what the oracle derives from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from simulator.log import FORMAT_VERSION, ReadingRec, RunRec, SimLog, read_log

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_acknowledged_and_unconfirmed_readings(tmp_path: Path) -> None:
    path = tmp_path / "sim.jsonl"
    log = SimLog(path, frames_hex=True)
    log.write(RunRec(run_id="r1", started_at=T0, sim_start=T0, speed=60.0, seed=7,
                     v=FORMAT_VERSION))
    for n in (1, 2, 3):
        log.frame(frame_id=f"DTU1/{n}", link="DTU1", service_point="dtu", sim_at=T0,
                  readings=1, data=b"\x68\x16")
        log.write(ReadingRec(frame=f"DTU1/{n}", meter_id="M1", register="volume", unit="m3",
                             value=f"{n}.00", sim_at=T0, ts=T0))
    log.frame(frame_id="DTU1/2", link="DTU1", service_point="dtu", sim_at=T0, readings=1,
              copy=2)
    log.ack("DTU1/1")
    log.ack("DTU1/2")
    log.fault("missing", "M1", T0, meter_id="M1", register="volume")
    log.close({"frames": 4})
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["k"] == "run"
    assert first["v"] == FORMAT_VERSION
    assert json.loads(lines[1])["hex"] == "6816"
    summary = read_log(path)
    assert [r.value for r in summary.acknowledged()] == ["1.00", "2.00"]
    assert [r.value for r in summary.unconfirmed()] == ["3.00"]
    assert summary.frame_copies["DTU1/2"] == 2
    assert summary.faults[0].kind == "missing"
    assert summary.clean_end


def test_a_torn_last_line_and_unknown_kinds_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "sim.jsonl"
    log = SimLog(path)
    log.write(ReadingRec(frame="L/1", meter_id="M", register="volume", unit="m3", value="1",
                         sim_at=T0))
    log.flush()
    with open(path, "a") as fh:
        fh.write('{"k":"future_kind","x":1}\n')
        fh.write('{"k":"reading","frame":"L/2","meter')  # killed mid-write
    summary = read_log(path)
    assert [r.frame for r in summary.readings] == ["L/1"]
    assert not summary.clean_end
