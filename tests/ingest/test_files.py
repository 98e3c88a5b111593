"""Upload files: validated first, all or nothing, every rejected line reported."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import FileImportError
from ingest.files import parse_upload, publish_upload
from ingest.ledger import LedgerView
from ingest.protocols import stack_for_protocol
from schemas.messages import LedgerMeter, RawFrame, Reading
from schemas.settings import KafkaSettings
from tests.ingest._devices import frame_901f
from tests.ingest._kafka import consume_messages

DATA = Path(__file__).parents[1] / "data" / "uploads"
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _ledger() -> LedgerView:
    view = LedgerView()
    view.load(LedgerMeter(meter_id=m, status="active", medium="gas", updated_at=T0, address=a,
                          protocol="cjt188-2004", link_id="DTU000001", service_point="dtu")
              for m, a in (("GAS-000001", "00000000010001"), ("GAS-000002", "00000000020001"),
                           ("WAT-000001", "00000000030001")))
    return view


def test_a_valid_csv_becomes_readings_in_utc() -> None:
    result = parse_upload(DATA / "handheld_ok.csv", ledger=_ledger(), source="handheld")
    assert result.ok
    assert result.lines == 3
    by_meter = {r.meter_id: r for r in result.readings}
    assert by_meter["GAS-000001"].ts == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert by_meter["GAS-000002"].ts == datetime(2026, 3, 1, 0, 5, tzinfo=UTC)  # local zone
    assert by_meter["GAS-000002"].status == ("battery_low",)
    assert str(by_meter["WAT-000001"].value) == "9.99"
    assert {r.source for r in result.readings} == {"handheld"}


def test_every_bad_line_is_reported_and_nothing_is_kept() -> None:
    result = parse_upload(DATA / "handheld_bad.csv", ledger=_ledger())
    assert not result.ok
    reasons = {r.line: r.reason for r in result.rejected}
    assert set(reasons) == {3, 4, 5, 6, 7, 8}
    assert "not in the ledger" in reasons[3]
    assert "ISO 8601" in reasons[4]
    assert "not a decimal" in reasons[5]
    assert "not canonical" in reasons[6]
    assert "conflicts with line 2" in reasons[7]
    assert "no register" in reasons[8]
    refused = publish_upload(result, KafkaSettings(bootstrap="127.0.0.1:1"), producer="t")
    with pytest.raises(FileImportError, match="6 rejected line"):
        asyncio.run(refused)


def test_json_lines_with_addresses() -> None:
    result = parse_upload(DATA / "offline_dtu.jsonl", ledger=_ledger(), source="offline_dtu")
    assert result.ok
    assert sorted(r.meter_id for r in result.readings) == ["GAS-000001", "GAS-000002"]


def test_hex_dump_frames_are_decoded_by_the_protocol_engine(tmp_path: Path) -> None:
    good = frame_901f("00000000010001", "140.25", datetime(2026, 3, 3, 1, tzinfo=UTC))
    dump = tmp_path / "rf.hex"
    dump.write_text(f"# handheld RF session\ncjt188-2004 {good.hex(' ')}\n"
                    f"cjt188-2004 {good[:-3].hex()}\n"
                    f"2026-03-03T09:00:00+08:00 cjt188-2004 {good.hex()}\n")
    result = parse_upload(dump, ledger=_ledger(), stack_for=stack_for_protocol)
    assert [r.line for r in result.rejected] == [3]  # the truncated frame, with its reason
    assert "cjt188-2004" in result.rejected[0].reason
    volumes = [r for r in result.readings if r.register == "volume"]
    assert [str(r.value) for r in volumes] == ["140.25"]  # lines 2 and 4: the same key once
    assert volumes[0].ts == datetime(2026, 3, 3, 1, tzinfo=UTC)


@pytest.mark.integration
async def test_valid_file_is_published_in_one_transaction(kafka_settings: KafkaSettings,
                                                          tmp_path: Path) -> None:
    good = frame_901f("00000000020001", "88.00", datetime(2026, 3, 4, 1, tzinfo=UTC))
    dump = tmp_path / "offline.hex"
    dump.write_text(f"cjt188-2004 {good.hex()}\n")
    result = parse_upload(dump, ledger=_ledger(), stack_for=stack_for_protocol,
                          producer="upload-test", source="offline_dtu")
    recorded: list[Any] = []

    async def record(res: Any, import_id: str) -> None:
        recorded.append(import_id)

    import_id = await publish_upload(result, kafka_settings, producer="upload-test",
                                     record=record)
    assert recorded == [import_id]

    def mine(ms: list[Any]) -> list[Reading]:
        return [m for m in ms if isinstance(m, Reading) and m.frame_id
                and m.frame_id.startswith(f"upload-test/{result.sha256[:12]}")]

    readings = mine(await consume_messages(kafka_settings, "readings.raw",
                                           until=lambda ms: len(mine(ms)) >= 2))
    assert {(r.register, str(r.value)) for r in readings} == {("volume", "88.00"),
                                                              ("volume_settlement", "88.00")}
    frames = [m for m in await consume_messages(kafka_settings, "frames.raw", count=1)
              if isinstance(m, RawFrame) and m.fep == "upload-test"]
    assert frames[0].data == good
