"""The VEE agent: ``readings.raw`` and ``readings.edits`` in, ``readings.validated``, VEE
alerts and history-read requests out. Wiring only — the logic is :mod:`vee`.

Per batch, each meter's state is read once from the ``vee_state`` table (msgpack bytes,
:func:`vee.model.encode_state`), each message goes through the engine with the meter's
ledger entry (dimensions, register shape, Qmax, VEE group), and the new states are written
back only after the broker acknowledged every output (:mod:`pipeline.app`). Envelope ids and
event times of the outputs come from their natural keys, so a replay after a crash produces
byte-identical messages.

Rule groups are the rule-set file (``pipeline.vee_rules``, default
``vee/rulesets/default.yaml``) with the groups published on ``ledger.vee_groups`` in place of
file groups of the same id; a published group that does not load is reported as an alert
and ignored. An edit that cannot be applied goes to ``dlq.pipeline`` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from billing.store import DecodedCache
from pipeline.app import BatchResult, Incoming, Output, PipelineApp
from schemas.messages import (
    Alert,
    LedgerMeter,
    LedgerVeeGroup,
    Reading,
    ReadingBatch,
    ReadingEdit,
)
from vee.engine import VeeEngine
from vee.errors import RuleConfigError, VeeInputError
from vee.groups import CompiledGroup, RuleSet, default_rules_path, load_rule_set, parse_group
from vee.model import MeterInfo, MeterState, decode_state, encode_state

__all__ = ["VeeRunner", "register"]

log = logging.getLogger(__name__)

StateStore = MutableMapping[bytes, Any]


class VeeRunner:
    """Runs batches of readings and edits through the engine over a state store."""

    def __init__(self, app: PipelineApp, base: RuleSet, store: StateStore) -> None:
        self.app = app
        self.base = base
        self.store = store
        self._revision = -1
        self.engine = VeeEngine(base, window_s=app.utility.late_data_days * 86400,
                                producer=app.producer_name)
        self._group_alerts: list[Alert] = []
        #: meter id -> (the ledger entry it was built from, the engine's view of it)
        self._meters: dict[str, tuple[LedgerMeter, MeterInfo]] = {}
        self.counters = {"readings": 0, "edits": 0, "validated": 0, "alerts": 0, "late": 0,
                         "duplicates": 0, "state_decoded": 0}
        #: decoded meter states between batches, used only while the store still holds exactly
        #: the bytes this worker wrote. The engine changes a state in place, so a batch takes
        #: its meters' entries out and only the batch's acknowledged write puts them back: a
        #: batch that fails or never gets written leaves nothing half-changed behind.
        self._decoded: DecodedCache[MeterState] = DecodedCache(app.settings.vee_state_cache)

    def _rules(self) -> VeeEngine:
        """The engine over the current rule set (rebuilt when ledger VEE groups change)."""
        revision = self.app.ledger.vee_groups_revision
        if revision != self._revision:
            self._revision = revision
            groups: dict[str, CompiledGroup] = {}
            for group in self.app.ledger.vee_groups().values():
                compiled = self._compile(group)
                if compiled is not None:
                    groups[group.group_id] = compiled
            ruleset = self.base.with_groups(groups) if groups else self.base
            self.engine = VeeEngine(ruleset, window_s=self.engine.window_s,
                                    producer=self.app.producer_name)
        return self.engine

    def _compile(self, group: LedgerVeeGroup) -> CompiledGroup | None:
        try:
            return parse_group(group.group_id, group.spec,
                               source=f"ledger.vee_groups/{group.group_id}",
                               version=group.version)
        except RuleConfigError as exc:
            log.warning("VEE group %s v%d ignored: %s", group.group_id, group.version, exc)
            self._group_alerts.append(Alert(
                alert_id=f"vee/group/{group.group_id}/{group.version}", object_type="vee_group",
                object_id=group.group_id, severity="major", code="vee.group_invalid",
                reason=str(exc), ts=group.updated_at, source=self.app.producer_name,
                attributes={"version": group.version}))
            return None

    def meter(self, meter_id: str) -> MeterInfo:
        ledger = self.app.ledger.meter(meter_id)
        if ledger is None:
            return self.engine.ruleset.meter_info(meter_id, MeterInfo.unknown(meter_id))
        # Built once per ledger entry, not per reading: the view hands out the same decoded
        # entry until the meter changes (or leaves its cache), so identity tells staleness.
        cached = self._meters.get(meter_id)
        if cached is not None and cached[0] is ledger:
            return cached[1]
        if len(self._meters) >= max(self.app.settings.ledger_cache_size, 1):
            self._meters.clear()
        info = MeterInfo.from_ledger(ledger)
        self._meters[meter_id] = (ledger, info)
        return info

    def _state(self, meter_id: str) -> MeterState | None:
        stored = self.store.get(meter_id.encode())
        if not stored:
            return None
        state = self._decoded.take(meter_id, stored, decode_state)
        self.counters["state_decoded"] = self._decoded.decoded
        return state

    def handle(self, batch: list[Incoming[Any]]) -> BatchResult:
        engine = self._rules()
        app = self.app
        states: dict[str, MeterState | None] = {}
        sources: dict[str, Incoming[Any]] = {}
        outputs: list[Output] = []
        if self._group_alerts:
            outputs.extend(app.output("alerts", a, message_id=a.alert_id, event_time=a.ts)
                           for a in self._group_alerts)
            self._group_alerts = []
        for item in batch:
            first = item.message
            meter_id = first.meter_id
            if meter_id not in states:
                states[meter_id] = self._state(meter_id)
            meter = self.meter(meter_id)
            # a meter's readings of one frame come as one record: its readings, in order
            for message in first.readings if isinstance(first, ReadingBatch) else (first,):
                try:
                    if isinstance(message, ReadingEdit):
                        self.counters["edits"] += 1
                        step = engine.apply_edit(message, meter, states[meter_id])
                    else:
                        assert isinstance(message, Reading)
                        self.counters["readings"] += 1
                        step = engine.process(message, meter, states[meter_id])
                except VeeInputError as exc:
                    outputs.append(app.dead_letter(exc, value=item.raw, key=item.key,
                                                   topic=item.topic, partition=item.partition,
                                                   offset=item.offset))
                    continue
                states[meter_id] = step.state
                sources[meter_id] = item
                if step.dropped == "late":
                    self.counters["late"] += 1
                elif step.dropped == "duplicate":
                    self.counters["duplicates"] += 1
                for out in step.outputs:
                    outputs.append(app.output(
                        "readings.validated", out, event_time=out.validated_at,
                        message_id=f"{out.meter_id}/{out.register}/{out.ts.isoformat()}/"
                                   f"{out.version}"))
                for alert in step.alerts:
                    outputs.append(app.output("alerts", alert, message_id=alert.alert_id,
                                              event_time=alert.ts))
                for command in step.commands:
                    outputs.append(app.output("commands.requests", command,
                                              message_id=command.command_id,
                                              event_time=command.requested_at))
                self.counters["validated"] += len(step.outputs)
                self.counters["alerts"] += len(step.alerts)

        def write_states() -> None:
            # the app calls this with an event of this batch's partition as faust's current
            # event: the entries land in the partition of the meters' readings
            for meter_id, state in states.items():
                if state is not None and meter_id in sources:
                    stored = encode_state(state)
                    self.store[meter_id.encode()] = stored
                    self._decoded.put(meter_id, stored, state)

        return BatchResult(outputs=outputs, after_send=write_states)


def load_base_rules(app: PipelineApp) -> RuleSet:
    path = app.settings.vee_rules or default_rules_path()
    return load_rule_set(path, timezone=app.utility.timezone)


def register(app: PipelineApp) -> None:
    """Register the VEE agent and its ``vee_state`` table on ``app``."""
    table = app.table("vee_state", help_text="VEE state per meter (vee.model.encode_state)")
    runner = VeeRunner(app, load_base_rules(app), table)
    app.extensions["vee"] = runner
    app.batch_agent(("readings.raw", "readings.edits"), (ReadingBatch, Reading, ReadingEdit),
                    name="vee")(runner.handle)

