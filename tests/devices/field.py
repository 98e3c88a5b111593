"""A scripted field for control-plane tests: meters that obey dispatched commands.

It stands in for the FEP and the meters behind it (their own packages are tested against
the real protocols): each :class:`~schemas.messages.CommandDispatch` from the outbox changes
a small meter state (valve, balance, price table) and yields the
:class:`~schemas.messages.CommandResult` an FEP would publish, interpreted the way the
catalog expects (``valve``, ``balance``, ``prices``, ``clock``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from devices.commands.dispatch import CommandEngine
from devices.operations import OperationService
from schemas.messages import CommandDispatch, CommandResult
from tests.devices.commands.helpers import Clock, dispatches


@dataclass
class Meter:
    valve: str = "open"
    balance: Decimal = Decimal("0")
    prices: list[str] = field(default_factory=list)
    volume: Decimal = Decimal("1234.567")


@dataclass
class Field:
    clock: Clock
    meters: dict[str, Meter] = field(default_factory=dict)
    #: (device, command) pairs the device refuses
    refuse: set[tuple[str, str]] = field(default_factory=set)
    handled: list[CommandDispatch] = field(default_factory=list)

    def meter(self, device_id: str) -> Meter:
        return self.meters.setdefault(device_id, Meter())

    def answer(self, d: CommandDispatch) -> CommandResult:
        self.handled.append(d)
        now = self.clock()
        if (d.device_id, d.command) in self.refuse:
            return CommandResult(command_id=d.command_id, device_id=d.device_id,
                                 status="rejected", ts=now, fep="fep-t", attempt=d.attempt,
                                 error_code="rejected", detail="abnormal reply")
        m = self.meter(d.device_id)
        reply: dict[str, Any] = {}
        # ``d.command`` is the encoder's command: a direct open on CJ/T 188 travels as the
        # A017 open code, which the wired meters of the fleet execute as an opening.
        if d.command == "valve_close":
            m.valve = "closed"
        elif d.command == "valve_arm_open":
            m.valve = "armed"
        elif d.command == "valve_open":
            m.valve = "open"
        elif d.command == "set_price":
            m.prices = [str(p) for p in d.params["prices"]]
        elif d.command == "set_balance":
            m.balance = Decimal(d.params["balance"])
        elif d.command == "top_up":
            m.balance += Decimal(d.params["amount"])
        elif d.command == "sync_time":
            reply = {"clock": now.isoformat(), "observed_at": now.isoformat()}
        elif d.command in ("read_now", "read_history"):
            reply = {"valve": m.valve, "balance": str(m.balance), "prices": m.prices,
                     "volume": str(m.volume), "clock": now.isoformat(),
                     "observed_at": now.isoformat()}
        return CommandResult(command_id=d.command_id, device_id=d.device_id,
                             status="confirmed" if d.command.startswith("read") else "delivered",
                             ts=now, fep="fep-t", attempt=d.attempt, reply=reply)

    def run(self, engine: CommandEngine, operations: OperationService | None = None,
            rounds: int = 30) -> None:
        """Let the control plane and the field talk until nothing moves any more."""
        idle = 0
        for _ in range(rounds):
            moved = operations.advance_due() if operations else 0
            moved += engine.dispatch_due()
            out = dispatches(engine.service)
            for d in out:
                engine.apply_result(self.answer(d))
            self.clock.advance(seconds=20)
            moved += len(out) + engine.sweep().total()
            idle = idle + 1 if moved == 0 else 0
            if idle >= 2:
                return
