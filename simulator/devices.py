"""Simulated meters speaking their protocols: reports, and answers to the head-end's requests.

Strategy: a :class:`MeterBehaviour` per protocol builds typed :class:`decoders.Frame` s and
lets ``decoders`` encode them — the simulator never writes protocol bytes itself, so it speaks
exactly what the FEP decodes (and a protocol bug shows up as a failed round trip, not as two
wrong halves agreeing). It answers requests as a meter would:

* CJ/T 188 (gas, water): ``901F`` returns the live register, settlement volume, clock and
  status; ``D120…`` the settlement history; ``A017`` really opens / closes / arms the valve;
  ``A010`` stores prices, ``A013`` adds a purchase to the balance, ``A015`` sets the clock
  (the drift is gone); anything else gets an abnormal reply.
* NB-IoT JSON (``nbiot-json:<map>``): documents written and read through the JSON map;
  valve, balance, top-up, report interval and clock commands change the meter.
* DL/T 645-2007 (electricity): reads of the energy registers return the register; relay
  control trips or closes the supply ("valve" state ``closed`` / ``open`` / ``armed``);
  unknown identifiers get the "no requested data" error reply.

The register a frame reports is the meter's true register at simulated time, distorted only
when the fault plan says so (the caller passes the value to put in the frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from simulator.fleet import SimMeter

__all__ = ["Answer", "Cjt188Meter", "Dlt645Meter", "JsonMeter", "behaviour_for"]

_METER_TYPES = {0x10: "cold_water", 0x11: "hot_water", 0x30: "gas"}


@dataclass
class Answer:
    """A reply frame's bytes and what the request did to the meter."""

    data: bytes | None
    command: str
    ok: bool = True
    effect: dict[str, Any] = field(default_factory=dict)
    readings: list[tuple[str, Decimal]] = field(default_factory=list)


def _local(at: datetime, meter: SimMeter) -> datetime:
    """The meter's clock (drift included) as the naive local time it displays."""
    shown = at + timedelta(seconds=meter.clock_drift_s)
    return shown.astimezone(meter.consumption.zone).replace(tzinfo=None, microsecond=0)


class Cjt188Meter:
    """CJ/T 188-2004 water and gas meters."""

    protocol_name = "cjt188-2004"

    def __init__(self) -> None:
        from decoders import get_protocol

        self.proto = get_protocol(self.protocol_name)

    def report_frame(self, meter: SimMeter, at: datetime, value: Decimal, *,
                     sequence: int = 0) -> bytes:
        """The 901F data frame a meter pushes (the same shape as its reply to a read)."""
        from decoders import DataItem, Frame

        settlement = meter.extra.get("settlement_value", value)
        frame = Frame(
            protocol=self.protocol_name, direction="reply", function="read_data",
            address=meter.address, identifier="901F", sequence=sequence % 256,
            header={"meter_type": _METER_TYPES.get(meter.meter_type, "gas")},
            items=(DataItem(name="current_volume", value=value, unit="m3"),
                   DataItem(name="settlement_volume", value=settlement, unit="m3"),
                   DataItem(name="meter_time", value=_local(at, meter)),
                   DataItem(name="valve_state", value=_valve_state(meter)),
                   DataItem(name="battery_low", value=meter.battery_low)))
        return bytes(self.proto.encode(frame))

    def answer(self, meter: SimMeter, request: Any, at: datetime) -> Answer:
        from decoders import DataItem, Frame

        ident = request.identifier or ""
        header = {"meter_type": _METER_TYPES.get(meter.meter_type, "gas")}
        values = request.values()
        value = meter.consumption.register_value()

        def reply(items: tuple[Any, ...], function: str | None = None) -> bytes:
            return bytes(self.proto.encode(Frame(
                protocol=self.protocol_name, direction="reply",
                function=function or request.function, address=meter.address, identifier=ident,
                sequence=request.sequence, header=header, items=items)))

        def status_items() -> tuple[Any, ...]:
            return (DataItem(name="valve_state", value=_valve_state(meter)),
                    DataItem(name="battery_low", value=meter.battery_low))

        if request.function == "read_data" and ident == "901F":
            data = self.report_frame(meter, at, value, sequence=request.sequence or 0)
            return Answer(data, "read_now", readings=[("volume", value)])
        if request.function == "read_data" and ident.startswith("D12"):
            history = meter.extra.get("history", {})
            months = int(ident[-1], 16) + 1
            past = history.get(months, value) if isinstance(history, dict) else value
            return Answer(reply((DataItem(name="settlement_volume", value=past, unit="m3"),)),
                          "read_history")
        if request.function == "write_data" and ident == "A017" and meter.has_valve:
            action = str(values.get("valve_action", ""))
            if "close" in action:
                meter.set_valve("closed", at)
            elif "open" in action:
                # A remote open arms the valve; the customer opens it at the meter.
                meter.set_valve("armed" if "free" in action or action == "open" else "open", at)
            return Answer(reply(status_items()), "valve", effect={"valve": meter.valve})
        if request.function == "write_data" and ident == "A010":
            meter.price = Decimal(str(values.get("price_1", "0")))
            return Answer(reply(status_items()), "set_price", effect={"price": str(meter.price)})
        if request.function == "write_data" and ident == "A013":
            amount = Decimal(str(values.get("purchase_amount", "0")))
            meter.balance = (meter.balance or Decimal(0)) + amount
            return Answer(reply(status_items()), "top_up",
                          effect={"balance": str(meter.balance)})
        if request.function == "write_data" and ident == "A015":
            meter.clock_drift_s = 0.0
            return Answer(reply(status_items()), "sync_time", effect={"clock_drift_s": 0})
        return Answer(bytes(self.proto.encode(Frame(
            protocol=self.protocol_name, direction="reply", function=request.function,
            address=meter.address, identifier=ident or None, sequence=request.sequence,
            abnormal=True, header=header, items=status_items()))), request.function, ok=False)


def _valve_state(meter: SimMeter) -> str:
    return "closed" if meter.valve == "closed" else "open"


class Dlt645Meter:
    """DL/T 645-2007 electricity meters."""

    protocol_name = "dlt645-2007"

    def __init__(self) -> None:
        from decoders import get_protocol

        self.proto = get_protocol(self.protocol_name)

    def report_frame(self, meter: SimMeter, at: datetime, value: Decimal, *,
                     sequence: int = 0) -> bytes:
        """The reply to a read of the forward active total (00010000)."""
        from decoders import DataItem, Frame

        return bytes(self.proto.encode(Frame(
            protocol=self.protocol_name, direction="reply", function="read_data",
            address=meter.address, identifier="00010000",
            items=(DataItem(name="forward_active_energy", value=value, unit="kWh"),))))

    def answer(self, meter: SimMeter, request: Any, at: datetime) -> Answer:
        from decoders import DataItem, Frame

        value = meter.consumption.register_value()
        if request.function == "read_data" and request.identifier in ("00010000", "00000000"):
            return Answer(self.report_frame(meter, at, value), "read_now",
                          readings=[("energy_import", value)])
        if request.function == "relay_control":
            action = str(request.values().get("relay_action", ""))
            if action == "trip":
                meter.set_valve("closed", at)
            elif action == "direct_close":
                meter.set_valve("open", at)
            elif action == "close_allowed":
                meter.set_valve("armed", at)
            return Answer(bytes(self.proto.encode(Frame(
                protocol=self.protocol_name, direction="reply", function="relay_control",
                address=meter.address))), "relay", effect={"relay": meter.valve})
        return Answer(bytes(self.proto.encode(Frame(
            protocol=self.protocol_name, direction="reply", function=request.function,
            address=meter.address, abnormal=True,
            items=(DataItem(name="error", value=("no_requested_data",)),)))),
            request.function, ok=False)


def _stamp(local: datetime, at: datetime, meter: SimMeter, time_format: str) -> Any:
    """The meter's clock at ``at`` as a JSON map writes it (``local``: its local display)."""
    shown = at + timedelta(seconds=meter.clock_drift_s)
    return {"compact": local.strftime("%Y%m%d%H%M%S"), "iso": local.isoformat(),
            "epoch_s": int(shown.timestamp()),
            "epoch_ms": int(shown.timestamp() * 1000)}[time_format]


class JsonMeter:
    """NB-IoT meters whose platform speaks JSON (``nbiot-json:<map>``): the documents are
    written and read through the device type's JSON map, so a map change changes both ends.

    Uploads carry the fields the map names (current volume, valve, battery, the meter's
    clock), or (:meth:`pack_frame`) the meter's last hourly registers through the map's
    series; a downlink is recognised as the map command whose fixed fields it matches, its
    ``"{param}"`` fields are the parameters, and the answer is the map's reply type echoing
    the message id with result 0 (or 1 when the meter cannot do it) and its status fields.
    """

    def __init__(self, protocol: str) -> None:
        from decoders import get_protocol

        self.protocol_name = protocol
        self.proto = get_protocol(protocol)
        self.map = self.proto.map  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ documents
    @staticmethod
    def _put(doc: dict[str, Any], path: str, value: Any) -> None:
        node = doc
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def _fields(self, doc: dict[str, Any], values: dict[str, Any]) -> None:
        for name, spec in self.map.model.fields.items():
            if name not in values or values[name] is None:
                continue
            value = values[name]
            if spec.type == "decimal":
                raw = Decimal(value) / Decimal(spec.scale) if spec.scale else Decimal(value)
                value = int(raw) if raw == raw.to_integral_value() else str(raw)
            elif spec.type == "enum":
                value = next((int(k) if k.isdigit() else k for k, v in spec.values.items()
                              if v == value), None)
            self._put(doc, spec.path, value)

    def _document(self, meter: SimMeter, kind: str, message_id: int, at: datetime,
                  values: dict[str, Any], result: int | None = None) -> bytes:
        import json

        model = self.map.model
        doc: dict[str, Any] = {}
        self._put(doc, model.address, meter.address)
        if model.message_type:
            self._put(doc, model.message_type, kind)
        if model.message_id:
            self._put(doc, model.message_id, message_id)
        if result is not None and model.result:
            self._put(doc, model.result, result)
        if model.clock is not None:
            self._put(doc, model.clock.path,
                      _stamp(_local(at, meter), at, meter, model.clock.format))
        self._fields(doc, values)
        return json.dumps(doc, separators=(",", ":")).encode()

    def _status(self, meter: SimMeter) -> dict[str, Any]:
        return {"valve_state": "armed" if meter.valve == "armed" else _valve_state(meter),
                "battery_low": meter.battery_low}

    def report_frame(self, meter: SimMeter, at: datetime, value: Decimal, *,
                     sequence: int = 0) -> bytes:
        return self._document(meter, "report", sequence, at,
                              {"current_volume": value, **self._status(meter)})

    def pack_series(self) -> Any:
        """The map's series of the current volume (what a pack upload fills), or None."""
        return next((x for x in self.map.model.series if x.field == "current_volume"), None)

    def pack_frame(self, meter: SimMeter, at: datetime,
                   hourly: list[tuple[datetime, Decimal]], *, sequence: int = 0) -> bytes:
        """An upload of frozen hourly registers (oldest first, consecutive hours) through the
        map's ``series``, with the status fields and the meter's clock at ``at``."""
        import json

        series = self.pack_series()
        if series is None:
            raise ValueError(f"the JSON map {self.map.name} has no series of current_volume")
        spec = self.map.model.fields["current_volume"]
        doc = json.loads(self._document(meter, "report", sequence, at, self._status(meter)))
        scale = Decimal(spec.scale) if spec.scale else Decimal(1)
        values: list[Any] = []
        for _, value in hourly:
            raw = value / scale
            values.append(int(raw) if raw == raw.to_integral_value() else str(raw))
        first = _local(hourly[0][0], meter)
        self._put(doc, series.path, values)
        self._put(doc, series.start.path, _stamp(first, hourly[0][0], meter,
                                                 series.start.format))
        return json.dumps(doc, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ commands
    def command_of(self, doc: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """(command, parameters) of a downlink document, by the map's command documents."""

        def match(template: Any, got: Any, params: dict[str, Any]) -> bool:
            if isinstance(template, dict):
                return isinstance(got, dict) and all(
                    match(v, got.get(k), params) for k, v in template.items())
            if isinstance(template, str) and template.startswith("{") and \
                    template.endswith("}"):
                params[template[1:-1]] = got
                return got is not None
            return bool(template == got)

        for name, spec in self.map.commands.items():
            params: dict[str, Any] = {}
            if match(spec.document, doc, params):
                return name, params
        return None

    def answer_document(self, meter: SimMeter, doc: dict[str, Any], at: datetime
                        ) -> Answer | None:
        found = self.command_of(doc)
        if found is None:
            return None
        command, params = found
        message_id = int(params.get("sequence", 0) or 0)
        value = meter.consumption.register_value()
        effect: dict[str, Any] = {}
        ok = True
        readings: list[tuple[str, Decimal]] = []
        extra: dict[str, Any] = {}
        if command == "read_now":
            extra["current_volume"] = value
            readings.append(("volume", value))
        elif command == "valve_close" and meter.has_valve:
            meter.set_valve("closed", at)
            effect = {"valve": "closed"}
        elif command == "valve_arm_open" and meter.has_valve:
            meter.set_valve("armed", at)
            effect = {"valve": "armed"}
        elif command == "set_balance":
            meter.balance = Decimal(str(params["balance"]))
            effect = {"balance": str(meter.balance)}
            extra["balance"] = meter.balance
        elif command == "top_up":
            meter.balance = (meter.balance or Decimal(0)) + Decimal(str(params["amount"]))
            effect = {"balance": str(meter.balance)}
            extra["balance"] = meter.balance
        elif command == "set_report_interval":
            meter.extra["report_interval_min"] = int(params["minutes"])
            effect = {"report_interval_min": int(params["minutes"])}
            extra["report_interval_min"] = int(params["minutes"])
        elif command == "sync_time":
            meter.clock_drift_s = 0.0
            effect = {"clock_drift_s": 0}
        else:
            ok = False
        reply_type = (self.map.model.reply_types or ["reply"])[0]
        data = self._document(meter, reply_type, message_id, at,
                              {**self._status(meter), **extra}, result=0 if ok else 1)
        return Answer(data, command, ok=ok, effect=effect, readings=readings)


_BEHAVIOURS: dict[str, Any] = {}


def behaviour_for(protocol: str) -> Any:
    """The (shared, stateless) behaviour of meters speaking ``protocol``."""
    found = _BEHAVIOURS.get(protocol)
    if found is None and protocol.startswith("nbiot-json:"):
        found = _BEHAVIOURS[protocol] = JsonMeter(protocol)
    if found is None:
        cls = {"cjt188-2004": Cjt188Meter, "dlt645-2007": Dlt645Meter}.get(protocol)
        if cls is None:
            raise KeyError(f"the simulator has no meter speaking {protocol}")
        found = _BEHAVIOURS[protocol] = cls()
    return found
