"""NB-IoT pack uploads (``nbiot_pack``): every upload carries the meter's last N hourly
registers through the JSON map's series, the FEP's decoder reads back exactly what the log
says was sent, and burst mode walks each meter's backlog without overlap up to now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from decoders import apply_report, get_protocol
from simulator.clock import SimClock
from simulator.fleet import FleetSpec
from simulator.links import MqttBridge
from simulator.log import read_log
from simulator.runner import Simulator, SimulatorSettings

START = datetime(2026, 1, 5, 0, 20, tzinfo=UTC)
PROTOCOL = "nbiot-json:nbiot-gas"


def _bridge(tmp_path: Path, *, pack: int = 24, burst: bool = False,
            protocol: str = PROTOCOL) -> tuple[Simulator, MqttBridge]:
    spec = FleetSpec(gas_dtu_meters=0, water_dtu_meters=0, electricity_dtu_meters=0,
                     electricity_meters=0, nbiot_meters=3, modbus_rtus=0,
                     nbiot_protocol=protocol)
    sim = Simulator(SimulatorSettings(nbiot_pack=pack), spec=spec,
                    clock=SimClock(START, 3600), log_path=tmp_path / "sim.jsonl", burst=burst)
    return sim, MqttBridge(sim, list(sim.fleet.of_kind("nbiot")), "mqtt://x", "t")


def _decoded(data: bytes) -> list[tuple[datetime, Decimal]]:
    report = apply_report(get_protocol(PROTOCOL).decode(data))
    assert report is not None
    return [(r.ts, r.value) for r in report.readings if r.register == "volume" and r.ts]


def test_each_upload_carries_the_last_hours_as_logged(tmp_path: Path) -> None:
    sim, bridge = _bridge(tmp_path)
    meter = next(iter(sim.fleet.meters.values()))
    first = bridge.build_upload(meter, START + timedelta(hours=10))
    second = bridge.build_upload(meter, START + timedelta(hours=40))
    assert first is not None
    assert second is not None
    sim.log.close({})
    log = read_log(tmp_path / "sim.jsonl")
    for upload, hours in ((first, 10), (second, 24)):
        sent = [(r.ts, Decimal(r.value)) for r in log.readings if r.frame == upload.frame_id]
        assert upload.readings == hours == len(sent)
        assert _decoded(upload.data) == sent  # the FEP reads exactly what was logged
        times = [ts for ts, _ in sent]
        assert times == [times[0] + timedelta(hours=n) for n in range(hours)]
        assert all(t.minute == 0 and t.second == 0 for t in times)
        values = [v for _, v in sent]
        assert values == sorted(values)  # a cumulative register
    # the second pack ends at the last full hour before its upload, its start overlaps the
    # first (last 24 hours, not only the new ones): redelivered keys the FEP absorbs
    last = [ts for ts, _ in _decoded(second.data)][-1]
    assert last == (START + timedelta(hours=40)).replace(minute=0)


def test_burst_walks_each_backlog_without_overlap_up_to_now(tmp_path: Path) -> None:
    _, bridge = _bridge(tmp_path, pack=6, burst=True)
    seen: dict[str, list[datetime]] = {}
    for _ in range(12):  # four packs of each of the three meters
        found = bridge._next_burst()
        assert found is not None
        meter, upload = found
        assert upload.readings == 6
        seen.setdefault(meter.meter_id, []).extend(ts for ts, _ in _decoded(upload.data))
    for times in seen.values():
        assert len(times) == 24
        assert times == [times[0] + timedelta(hours=n) for n in range(24)]  # no gap, no repeat
        assert times[-1] < datetime.now(UTC)


def test_packs_need_a_map_with_a_series(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="series"):
        _bridge(tmp_path, protocol="cjt188-2004")
