"""The FEP's ledger view (compacted ledger.meters on the real broker) and admission rules."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from ingest.ledger import Admission, LedgerView
from schemas import codec
from schemas.messages import LedgerMeter
from schemas.settings import KafkaSettings

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _meter(meter_id: str, address: str, **kw: object) -> LedgerMeter:
    base: dict[str, object] = {"status": "active", "medium": "gas", "updated_at": T0,
                               "protocol": "cjt188-2004", "link_id": "DTU1",
                               "service_point": "dtu"}
    base.update(kw)
    return LedgerMeter(meter_id=meter_id, address=address, **base)  # type: ignore[arg-type]


def test_admission_rules() -> None:
    view = LedgerView()
    view.load([_meter("A", "0001"), _meter("B", "00 02", link_id=None),
               _meter("C", "0003", status="in_stock"), _meter("D", "0004", service_point="x"),
               _meter("E", "0005", ledger_version=2)])
    view.apply(_meter("E", "0099", ledger_version=1))  # an older version never wins
    admission = Admission(view)
    assert admission.admit_meter("dtu", "DTU1", "0001").meter_id == "A"
    assert admission.admit_meter("dtu", "DTU9", "0002").meter_id == "B"  # no link assigned
    assert "wrong_link" in admission.admit_meter("dtu", "DTU9", "0001").reason
    assert "not_installed" in admission.admit_meter("dtu", "DTU1", "0003").reason
    assert "wrong_service_point" in admission.admit_meter("dtu", "DTU1", "0004").reason
    assert "unknown_address" in admission.admit_meter("dtu", "DTU1", "0099").reason
    assert admission.admit_meter("dtu", "DTU1", "0005").meter_id == "E"
    assert admission.admit_link("dtu", "DTU1").admitted
    assert admission.admit_link("dtu", "DTU-NEW").admitted  # B reports through any link
    view.remove("B")
    assert not Admission(view).admit_link("dtu", "DTU-NEW").admitted

    auto = Admission(view, mode="auto")
    first = auto.admit_meter("dtu", "DTU7", "7777")
    again = auto.admit_meter("dtu", "DTU7", "7777")
    assert (first.admitted, first.auto_registered, first.meter_id) == (True, True, "7777")
    assert (again.admitted, again.auto_registered) == (True, False)  # audited once


@pytest.mark.integration
async def test_follows_the_compacted_topic(kafka_settings: KafkaSettings) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas.topics import topic_spec
    from unimeter.topics import create_topics, delete_topics

    tag = uuid.uuid4().hex[:6]
    # a topic of this test alone: it writes a record that is not an envelope
    kafka_settings = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}ledger{tag}."})
    create_topics(kafka_settings, (topic_spec("ledger.meters"),))
    topic = kafka_settings.topic("ledger.meters")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all")
    await producer.start()

    async def put(meter: LedgerMeter | None, key: str) -> None:
        value = codec.encode(meter, producer="test") if meter is not None else None
        await producer.send_and_wait(topic, value, key=key.encode())

    view = LedgerView()
    try:
        await put(_meter(f"{tag}-1", f"{tag}01"), f"{tag}-1")
        await put(_meter(f"{tag}-2", f"{tag}02"), f"{tag}-2")
        await put(None, f"{tag}-2")  # tombstone: removed from the ledger
        await producer.send_and_wait(topic, b"not an envelope", key=b"junk")
        await view.follow(kafka_settings, client_id="test", ready_timeout_s=20)
        assert view.ready.is_set()
        assert view.by_address(f"{tag}01")[0].meter_id == f"{tag}-1"
        assert not view.by_address(f"{tag}02")
        assert view.decode_errors >= 1
        await put(_meter(f"{tag}-3", f"{tag}03"), f"{tag}-3")  # installed while running
        for _ in range(100):
            if view.by_address(f"{tag}03"):
                break
            await asyncio.sleep(0.1)
        assert view.by_address(f"{tag}03")[0].meter_id == f"{tag}-3"
    finally:
        await view.stop()
        await producer.stop()
        delete_topics(kafka_settings, [topic])


def test_link_ids_compare_by_their_digits_and_keep_the_ledger_spelling() -> None:
    view = LedgerView()
    view.load([_meter("E1", "000000000101", link_id="4201-0001", service_point="con")])
    admission = Admission(view)
    assert admission.admit_link("con", "42010001").admitted  # as the 376.1 frames say it
    assert admission.admit_meter("con", "42010001", "000000000101").meter_id == "E1"
    assert view.canonical_link("42010001") == "4201-0001"  # what the registry records
    assert view.canonical_link("DTU-NEW") == "DTU-NEW"
    assert [m.meter_id for m in view.on_link("4201 0001")] == ["E1"]


def test_meters_are_found_by_their_concentrators_measuring_point() -> None:
    view = LedgerView()
    view.load([_meter("E1", "000000000101", link_id="4201-0001", point_no=1),
               _meter("E2", "000000000102", link_id="4201-0001", point_no=2),
               _meter("E3", "000000000103", link_id="4201-0002", point_no=1)])
    at = view.at_point("42010001", 2)
    assert at is not None
    assert at.meter_id == "E2"
    other = view.at_point("4201 0002", 1)
    assert other is not None
    assert other.meter_id == "E3"
    assert view.at_point("42010001", 3) is None
    # a meter replaced at the point: the new one answers for it, the old one no longer
    view.remove("E2")
    assert view.at_point("42010001", 2) is None
    view.apply(_meter("E4", "000000000104", link_id="4201-0001", point_no=2))
    moved = view.at_point("42010001", 2)
    assert moved is not None
    assert moved.meter_id == "E4"
    view.apply(_meter("E4", "000000000104", link_id="4201-0001", point_no=5, ledger_version=2))
    assert view.at_point("42010001", 2) is None
    assert view.at_point("42010001", 5) is not None
