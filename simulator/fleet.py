"""The simulated fleet: meters, the links that carry them, and what the ledger should say.

Strategy: a :class:`FleetSpec` (counts and mixes) expands deterministically (one seed) into
:class:`SimMeter` and :class:`SimLink` objects:

* gas and water meters speaking CJ/T 188 behind transparent DTUs (several meters per RS-485
  bus, one TCP link per DTU, identified by its registration packet);
* electricity meters speaking DL/T 645-2007 behind DTUs, and behind Q/GDW 376.1
  concentrators (one login per concentrator; the head-end reads the meters through it with
  AFN 10 forwarding);
* Modbus TCP RTUs (industrial flow computers, register map ``flow-computer``), read by the
  FEP's collection plans through pymodbus;
* NB-IoT gas meters publishing CJ/T 188 frames over MQTT and listening for a short window.

Each meter has a customer class (residential / commercial / industrial, in the spec's mix), a
consumption model (:mod:`simulator.consumption`), a valve where the medium has one, and a
register that starts somewhere plausible. :meth:`Fleet.ledger` gives the
:class:`~schemas.messages.LedgerMeter` records the platform's ledger must hold for admission;
:meth:`Fleet.export_csv` writes them for a ledger import.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from schemas.messages import LedgerMeter
from simulator.consumption import MeterConsumption, profile_for

__all__ = ["Fleet", "FleetSpec", "SimLink", "SimMeter"]

LinkKind = Literal["dtu", "concentrator", "modbus", "nbiot"]


@dataclass(frozen=True)
class FleetSpec:
    """How many of each, and how they are networked. Defaults: 10,000 meters."""

    gas_dtu_meters: int = 4000
    water_dtu_meters: int = 2000
    meters_per_dtu: int = 8
    electricity_dtu_meters: int = 1300  # DL/T 645 behind DTUs
    electricity_meters: int = 1300  # DL/T 645 behind Q/GDW 376.1 concentrators
    meters_per_concentrator: int = 50
    nbiot_meters: int = 1400
    modbus_rtus: int = 100
    residential_share: float = 0.85
    commercial_share: float = 0.12  # the rest is industrial
    seed: int = 20260701
    # where the links connect (the FEP's default service points)
    dtu_service_point: str = "dtu-cjt188"
    dtu645_service_point: str = "dtu-dlt645"
    concentrator_service_point: str = "concentrator-376"
    nbiot_service_point: str = "nbiot-mqtt"
    modbus_service_point: str = "modbus-rtu"
    dtu_protocol: str = "cjt188-2004"
    meter_protocol_645: str = "dlt645-2007"
    concentrator_protocol: str = "qgdw376.1"
    modbus_protocol: str = "modbus-tcp"
    #: what NB-IoT meters speak: binary CJ/T 188, or a JSON map (``nbiot-json:nbiot-gas``)
    nbiot_protocol: str = "cjt188-2004"

    @property
    def meters(self) -> int:
        return (self.gas_dtu_meters + self.water_dtu_meters + self.electricity_dtu_meters
                + self.electricity_meters + self.nbiot_meters + self.modbus_rtus)

    def scaled(self, total: int) -> FleetSpec:
        """The same mix scaled to about ``total`` meters."""
        factor = total / max(1, self.meters)

        def n(x: int) -> int:
            return max(1 if x else 0, round(x * factor))

        from dataclasses import replace

        return replace(self, gas_dtu_meters=n(self.gas_dtu_meters),
                       water_dtu_meters=n(self.water_dtu_meters),
                       electricity_dtu_meters=n(self.electricity_dtu_meters),
                       electricity_meters=n(self.electricity_meters),
                       nbiot_meters=n(self.nbiot_meters), modbus_rtus=n(self.modbus_rtus))


@dataclass
class SimMeter:
    """One simulated meter: identity, register, valve, and how it is reached."""

    meter_id: str
    address: str
    medium: str
    protocol: str
    customer_type: str
    unit: str
    register_name: str
    consumption: MeterConsumption
    link_id: str
    service_point: str
    meter_type: int = 0x30  # CJ/T 188 T byte (0x30 gas, 0x10 cold water); 0 for others
    has_valve: bool = False
    valve: str = "open"  # open | closed | armed
    battery_low: bool = False
    clock_drift_s: float = 0.0  # the meter's clock minus true time
    balance: Decimal | None = None  # prepaid balance a write command may set
    price: Decimal | None = None
    reported_total: float | None = None  # true total at the last report (for faults)
    modbus_unit: int = 0
    point_no: int | None = None  # measuring point in its concentrator's archive (376.1 pN)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def supplied(self) -> bool:
        """Whether the medium flows: a closed (or armed, not yet opened at the meter) valve
        or a tripped relay shuts the supply off, and the register stands still."""
        return not self.has_valve or self.valve == "open"

    def advance(self, at: datetime) -> None:
        """Bring the register up to ``at``: the consumption profile while supplied."""
        if self.supplied:
            self.consumption.advance(at)
        else:
            self.consumption.skip(at)

    def set_valve(self, state: str, at: datetime) -> None:
        """Change the valve (relay) at ``at``: the register first takes what flowed until
        then, under the old state."""
        self.advance(at)
        self.valve = state

    def ledger_entry(self, now: datetime) -> LedgerMeter:
        return LedgerMeter(
            meter_id=self.meter_id, status="active",
            medium=self.medium,  # type: ignore[arg-type]
            updated_at=now, address=self.address, protocol=self.protocol,
            device_type=f"sim-{self.medium}-{self.protocol}", manufacturer="unimeter-sim",
            register_digits=self.consumption.digits,
            register_decimals=self.consumption.decimals, unit=self.unit,
            has_valve=self.has_valve, link_id=self.link_id, service_point=self.service_point,
            customer_type=self.customer_type, installed_at=self.consumption.start,
            point_no=self.point_no)


@dataclass
class SimLink:
    """A DTU, a concentrator, an RTU endpoint or an NB-IoT meter's own radio link."""

    link_id: str
    kind: LinkKind
    service_point: str
    protocol: str
    meters: list[SimMeter] = field(default_factory=list)
    address: str = ""  # concentrator address (376.1 A1/A2)


class Fleet:
    def __init__(self, spec: FleetSpec, start: datetime, *, timezone: str = "Asia/Shanghai"
                 ) -> None:
        from zoneinfo import ZoneInfo

        self.spec = spec
        self.start = start
        self.zone = ZoneInfo(timezone)
        self.links: dict[str, SimLink] = {}
        self.meters: dict[str, SimMeter] = {}
        self._rng = random.Random(spec.seed)
        self._build()

    # ------------------------------------------------------------------ construction

    def _customer_type(self) -> str:
        x = self._rng.random()
        if x < self.spec.residential_share:
            return "residential"
        if x < self.spec.residential_share + self.spec.commercial_share:
            return "commercial"
        return "industrial"

    def _consumption(self, customer: str, medium: str, n: int, digits: int, decimals: int,
                     ) -> MeterConsumption:
        profile = profile_for(customer, medium)
        # an installed meter has already counted something: up to a few years of use
        initial = self._rng.uniform(0, profile.mean_per_hour * 24 * 365 * 3)
        return MeterConsumption(profile, seed=self.spec.seed * 7919 + n, start=self.start,
                                initial=min(initial, 10 ** digits * 0.9), digits=digits,
                                decimals=decimals, zone=self.zone)

    def _add(self, meter: SimMeter, link: SimLink) -> None:
        link.meters.append(meter)
        self.meters[meter.meter_id] = meter

    def _build(self) -> None:
        s = self.spec
        n = 0
        for medium, count, prefix, t_byte in (("gas", s.gas_dtu_meters, "GAS", 0x30),
                                              ("water", s.water_dtu_meters, "WAT", 0x10)):
            for i in range(count):
                if i % s.meters_per_dtu == 0:
                    link = SimLink(f"DTU{len(self.links) + 1:06d}", "dtu", s.dtu_service_point,
                                   s.dtu_protocol)
                    self.links[link.link_id] = link
                n += 1
                customer = self._customer_type()
                address = f"{n:010d}0001"  # meter number + manufacturer code (14 digits)
                self._add(SimMeter(
                    meter_id=f"{prefix}-{i + 1:06d}", address=address, medium=medium,
                    protocol=s.dtu_protocol, customer_type=customer, unit="m3",
                    register_name="volume",
                    consumption=self._consumption(customer, medium, n, 6, 2),
                    link_id=link.link_id, service_point=s.dtu_service_point,
                    meter_type=t_byte, has_valve=medium == "gas" or self._rng.random() < 0.3,
                ), link)
        for i in range(s.electricity_dtu_meters):
            if i % s.meters_per_dtu == 0:
                link = SimLink(f"DTU{len(self.links) + 1:06d}", "dtu", s.dtu645_service_point,
                               s.meter_protocol_645)
                self.links[link.link_id] = link
            n += 1
            customer = self._customer_type()
            self._add(SimMeter(
                meter_id=f"ELD-{i + 1:06d}", address=f"{n:012d}", medium="electricity",
                protocol=s.meter_protocol_645, customer_type=customer, unit="kWh",
                register_name="energy_import",
                consumption=self._consumption(customer, "electricity", n, 6, 2),
                link_id=link.link_id, service_point=s.dtu645_service_point, meter_type=0,
                has_valve=True), link)
        for i in range(s.electricity_meters):
            if i % s.meters_per_concentrator == 0:
                number = i // s.meters_per_concentrator + 1
                link = SimLink(f"CON{number:05d}", "concentrator", s.concentrator_service_point,
                               s.concentrator_protocol, address=f"3201{number:04X}")
                self.links[link.link_id] = link
            n += 1
            customer = self._customer_type()
            self._add(SimMeter(
                meter_id=f"ELE-{i + 1:06d}", address=f"{n:012d}", medium="electricity",
                protocol=s.meter_protocol_645, customer_type=customer, unit="kWh",
                register_name="energy_import",
                consumption=self._consumption(customer, "electricity", n, 6, 2),
                link_id=link.address, service_point=s.concentrator_service_point,
                meter_type=0, has_valve=True, valve="open",
                point_no=i % s.meters_per_concentrator + 1), link)
        for i in range(s.nbiot_meters):
            n += 1
            customer = "residential" if self._rng.random() < 0.95 else "commercial"
            meter_id = f"NBG-{i + 1:06d}"
            link = SimLink(meter_id, "nbiot", s.nbiot_service_point, s.nbiot_protocol)
            self.links[link.link_id] = link
            self._add(SimMeter(
                meter_id=meter_id, address=f"{n:010d}0002", medium="gas",
                protocol=s.nbiot_protocol, customer_type=customer, unit="m3",
                register_name="volume", consumption=self._consumption(customer, "gas", n, 6, 2),
                link_id=meter_id, service_point=s.nbiot_service_point, meter_type=0x30,
                has_valve=True), link)
        for i in range(s.modbus_rtus):
            if i % 200 == 0:
                link = SimLink(f"RTU{len(self.links) + 1:05d}", "modbus", s.modbus_service_point,
                               s.modbus_protocol)
                self.links[link.link_id] = link
            n += 1
            medium = "gas" if i % 2 == 0 else "water"
            self._add(SimMeter(
                meter_id=f"RTU-{i + 1:05d}", address=str(i % 200 + 1), medium=medium,
                protocol=s.modbus_protocol, customer_type="industrial", unit="m3",
                register_name="volume",
                consumption=self._consumption("industrial", medium, n, 6, 3),
                link_id=link.link_id, service_point=s.modbus_service_point, meter_type=0,
                modbus_unit=i % 200 + 1), link)

    # ------------------------------------------------------------------ views

    def of_kind(self, kind: LinkKind) -> Iterator[SimLink]:
        return (link for link in self.links.values() if link.kind == kind)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"meters": len(self.meters), "links": len(self.links)}
        for link in self.links.values():
            out[f"{link.kind}_links"] = out.get(f"{link.kind}_links", 0) + 1
            out[f"{link.kind}_meters"] = out.get(f"{link.kind}_meters", 0) + len(link.meters)
        return out

    def ledger(self, now: datetime | None = None) -> list[LedgerMeter]:
        stamp = now or self.start
        return [m.ledger_entry(stamp) for m in self.meters.values()]

    def export_csv(self, path: Path) -> int:
        """The fleet as a ledger import file (one row per meter)."""
        rows = 0
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["meter_id", "address", "medium", "protocol", "device_type",
                             "link_id", "service_point", "customer_type", "unit",
                             "register_digits", "register_decimals", "has_valve"])
            for m in self.meters.values():
                writer.writerow([m.meter_id, m.address, m.medium, m.protocol,
                                 f"sim-{m.medium}-{m.protocol}", m.link_id, m.service_point,
                                 m.customer_type, m.unit, m.consumption.digits,
                                 m.consumption.decimals, str(m.has_valve).lower()])
                rows += 1
        return rows
