"""One realistic instance of every message type, shared by the tests of every package."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.messages import (
    MESSAGE_TYPES,
    Alert,
    BalanceChange,
    Charge,
    ChargeSegment,
    CommandDispatch,
    CommandRequest,
    CommandResult,
    DeadLetter,
    DeviceEvent,
    Dimensions,
    EditInfo,
    IntervalConsumption,
    LedgerAccount,
    LedgerMeter,
    LedgerTariff,
    LedgerVeeGroup,
    Message,
    RawFrame,
    Reading,
    Settlement,
    TariffTier,
    TopUp,
    ValidatedReading,
)

T0 = datetime(2026, 7, 10, 1, 0, tzinfo=UTC)


def sample_messages() -> dict[str, Message]:
    """schema name → one instance with every optional structure filled in."""
    reading = Reading(meter_id="GAS-000001", register="volume", ts=T0,
                      value=Decimal("12345.678"), unit="m3", received_at=T0 + timedelta(seconds=3),
                      meter_clock=T0 - timedelta(seconds=40), source="tcp", device_id="DTU-7",
                      fep="fep-1", protocol="cjt188-2004", status=("battery_low",),
                      frame_id="fep-1/s1/42")
    samples: list[Message] = [
        RawFrame(frame_id="fep-1/s1/42", device_id="DTU-7", fep="fep-1", service_point="sp-gas",
                 peer="10.0.0.5:40001", protocol="cjt188-2004", direction="in",
                 received_at=T0, data=bytes.fromhex("68104433221100337881")),
        reading,
        DeviceEvent(event_id="ev-1", device_id="DTU-7", kind="online", ts=T0, fep="fep-1",
                    attributes={"peer": "10.0.0.5:40001", "signal": -71}),
        ValidatedReading(
            meter_id="GAS-000001", register="volume", ts=T0, value=Decimal("12345.678"),
            unit="m3", version=2, quality="estimated", method="linear",
            flags=("gap", "battery_low"), consumption=Decimal("1.250"),
            interval_start=T0 - timedelta(hours=2),
            intervals=(IntervalConsumption(start=T0 - timedelta(hours=2),
                                           end=T0 - timedelta(hours=1), volume=Decimal("0.625"),
                                           estimated=True),
                       IntervalConsumption(start=T0 - timedelta(hours=1), end=T0,
                                           volume=Decimal("0.625"), estimated=True)),
            original_value=Decimal("12399.000"), received_at=T0, validated_at=T0,
            dims=Dimensions(account_id="ACC-1", customer_type="residential", region="north",
                            org_unit="branch-3", supply_node="PZ-2", tariff_id="BJ-GAS",
                            vee_group="residential-gas", medium="gas"),
            edit=EditInfo(user="alice", at=T0, reason_code="SPIKE", previous_value=Decimal("9"),
                          previous_version=1, note="confirmed with customer"),
            source="tcp", frame_id="fep-1/s1/42"),
        Charge(charge_id="ACC-1:GAS-000001:2026-07-10T01:00:00Z:2", account_id="ACC-1",
               meter_id="GAS-000001", kind="consumption", period_start=T0 - timedelta(days=1),
               period_end=T0, volume=Decimal("8"), amount=Decimal("21.54"),
               segments=(ChargeSegment(tier=1, volume=Decimal("5"), unit_price=Decimal("2.61"),
                                       amount=Decimal("13.05"), tariff_id="BJ-GAS"),
                         ChargeSegment(tier=2, volume=Decimal("3"), unit_price=Decimal("2.83"),
                                       amount=Decimal("8.49"), tariff_id="BJ-GAS")),
               reading_ts=T0, reading_version=2, register="volume", tariff_id="BJ-GAS",
               cycle_id="2026", cycle_volume_after=Decimal("353"), created_at=T0),
        BalanceChange(entry_id="ACC-1:c:1", account_id="ACC-1", ts=T0, kind="charge",
                      amount=Decimal("-21.54"), balance_after=Decimal("28.46"),
                      reference="ACC-1:GAS-000001:2026-07-10T01:00:00Z:2", alarm_state="alarm1"),
        Settlement(settlement_id="ACC-1:day:2026-07-10", account_id="ACC-1", period="day",
                   period_id="2026-07-10", period_start=datetime(2026, 7, 9, 16, tzinfo=UTC),
                   period_end=datetime(2026, 7, 10, 16, tzinfo=UTC), revision=2,
                   volume=Decimal("8"), amount=Decimal("21.54"),
                   estimated_volume=Decimal("3"), provisional=True,
                   segments=(ChargeSegment(tier=1, volume=Decimal("5"),
                                           unit_price=Decimal("2.61"), amount=Decimal("13.05"),
                                           tariff_id="BJ-GAS", tariff_version=3),
                             ChargeSegment(tier=2, volume=Decimal("3"),
                                           unit_price=Decimal("2.83"), amount=Decimal("8.49"),
                                           tariff_id="BJ-GAS", tariff_version=3)),
                   charges=2, meters=("GAS-000001",), tariff_id="BJ-GAS", cycle_id="2026",
                   cycle_volume_after=Decimal("353"), balance_after=Decimal("28.46"),
                   created_at=T0),
        TopUp(top_up_id="CIS-TOPUP-77", account_id="ACC-1", amount=Decimal("100.00"),
              ts=T0, channel="counter", operator="teller-4"),
        Alert(alert_id="al-1", object_type="account", object_id="ACC-1", severity="warning",
              code="billing.alarm1", reason="balance 28.46 fell below alarm level 1 (30.00)",
              ts=T0, source="billing", attributes={"balance": "28.46"}),
        CommandRequest(command_id="cmd-1", device_id="GAS-000001", command="valve_close",
                       requested_by="billing", requested_at=T0, params={"reason": "cut_off"},
                       client_command_id="billing:ACC-1:cutoff:1", origin="billing",
                       reason="balance below overdraft limit",
                       expires_at=T0 + timedelta(days=1)),
        CommandDispatch(command_id="cmd-1", device_id="GAS-000001", command="valve_close",
                        protocol="cjt188-2004", address="00000019121301", dispatched_at=T0,
                        device_type="gas-meter-nbiot", link_id="DTU-7", fep="fep-1",
                        service_point="sp-gas", delivery="on_wake",
                        expires_at=T0 + timedelta(days=1)),
        CommandResult(command_id="cmd-1", device_id="GAS-000001", status="confirmed", ts=T0,
                      fep="fep-1", detail="valve reports closed", reply={"valve": "closed"}),
        DeadLetter(stage="ingest", reason={"error": "DecodeError", "reason": "bad checksum",
                                           "offset": 12},
                   ts=T0, value=b"\x68\x10garbage", key_bytes=b"DTU-7",
                   source_topic="unimeter.frames.raw", partition=0, offset=17),
        LedgerMeter(meter_id="GAS-000001", status="active", medium="gas", updated_at=T0,
                    address="00000019121301", device_type="gas-meter-nbiot",
                    protocol="cjt188-2004", manufacturer="ACME", size="G2.5",
                    qmax=Decimal("4"), register_digits=5, register_decimals=3, has_valve=True,
                    link_id="DTU-7", service_point="sp-gas", account_id="ACC-1",
                    customer_type="residential", region="north", org_unit="branch-3",
                    supply_node="PZ-2", tariff_id="BJ-GAS", vee_group="residential-gas",
                    installed_at=T0 - timedelta(days=400)),
        LedgerAccount(account_id="ACC-1", customer_type="residential",
                      billing_mode="prepaid_money", updated_at=T0, customer_id="C-1",
                      tariff_id="BJ-GAS", alarm1=Decimal("30.00"), alarm2=Decimal("10.00"),
                      overdraft_limit=Decimal("20.00"), max_balance=Decimal("5000"),
                      tier_override={"1": Decimal("450")}, region="north"),
        LedgerTariff(tariff_id="BJ-GAS", version=3, kind="step",
                     effective_from=datetime(2018, 7, 10, tzinfo=UTC), updated_at=T0,
                     tiers=(TariffTier(upper=Decimal("350"), price=Decimal("2.61")),
                            TariffTier(upper=Decimal("500"), price=Decimal("2.83")),
                            TariffTier(upper=None, price=Decimal("4.23")))),
        LedgerVeeGroup(group_id="residential-gas", version=1,
                       spec="rules:\n  - id: absolute_limits\n", updated_at=T0),
    ]
    by_schema = {m.SCHEMA: m for m in samples}
    missing = set(MESSAGE_TYPES) - set(by_schema)
    assert not missing, f"add a sample for {missing}"
    return by_schema


@pytest.fixture
def samples() -> dict[str, Message]:
    return sample_messages()
