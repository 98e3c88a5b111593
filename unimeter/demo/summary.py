"""The demo's summary: what the platform collected, validated, billed and commanded.

Every figure is read back from the database (and the simulator's log for what was sent), so
the summary is also a check: the integration test compares it with its own queries. The
``sample_query`` is printed for analysts to start from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from simulator.log import LogSummary

__all__ = ["SAMPLE_QUERY", "DemoSummary", "NetworkFigures", "collect_summary", "render"]

#: ``{zone}``: the utility's time zone (daily buckets start at its local midnight)
SAMPLE_QUERY = """SELECT (bucket AT TIME ZONE '{zone}')::date AS day, customer_type, medium,
       unit, round(sum(consumption), 1) AS consumption
  FROM agg.dimension_consumption_daily
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3;"""

AGG_LEVELS = ("hourly", "daily", "monthly")


@dataclass
class NetworkFigures:
    """Collection through one service point (one kind of network)."""

    network: str
    meters: int = 0
    meters_heard: int = 0  # meters with at least one stored reading
    sent: int = 0  # readings the simulator put on the wire (first transmission)
    acknowledged: int = 0  # of those, acknowledged by the FEP
    stored: int = 0  # raw readings stored for meters of this network

    @property
    def success(self) -> float:
        """Share of the network's meters that got at least one reading stored."""
        return self.meters_heard / self.meters if self.meters else 0.0


@dataclass
class DemoSummary:
    raw_stored: int = 0
    validated_stored: int = 0  # latest version of each validated reading
    validated_versions: int = 0
    sent: int = 0
    acknowledged: int = 0
    acknowledged_stored: int = 0  # acknowledged readings (with a time stamp) found stored
    acknowledged_with_ts: int = 0
    networks: list[NetworkFigures] = field(default_factory=list)
    quality: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    estimates: dict[str, int] = field(default_factory=dict)
    charges: int = 0
    charged: Decimal = Decimal(0)
    charges_by_tariff: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    top_ups: int = 0
    topped_up: Decimal = Decimal(0)
    balances: int = 0
    balance_total: Decimal = Decimal(0)
    balances_negative: int = 0
    alarm_states: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    commands: dict[tuple[str, str], int] = field(default_factory=dict)
    device_valves: dict[str, int] = field(default_factory=dict)  # from the simulator's log
    faults: dict[str, int] = field(default_factory=dict)  # injected, from the simulator's log
    aggregates: dict[str, int] = field(default_factory=dict)
    days: list[tuple[str, str, str, str, Decimal]] = field(default_factory=list)
    zone: str = "Asia/Shanghai"


def _rows(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[Any]:
    return conn.execute(query, params or None).fetchall()


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def collect_summary(conn: psycopg.Connection[Any], log: LogSummary, *,
                    zone: str = "Asia/Shanghai") -> DemoSummary:
    """Read every figure of the summary (``conn``: any role that may read data, billing, ops
    and agg; the demo uses the owner)."""
    s = DemoSummary()
    s.raw_stored = _one(conn, "SELECT count(*) FROM data.raw_readings")
    s.validated_versions = _one(conn, "SELECT count(*) FROM data.validated_readings")
    latest = ("(SELECT DISTINCT ON (meter_id, register, ts) * FROM data.validated_readings "
              "ORDER BY meter_id, register, ts, version DESC) v")
    s.validated_stored = _one(conn, f"SELECT count(*) FROM {latest}")
    s.quality = dict(_rows(conn, f"SELECT quality, count(*) FROM {latest} GROUP BY 1 "
                                 "ORDER BY 2 DESC"))
    s.flags = dict(_rows(conn, f"SELECT f, count(*) FROM {latest}, unnest(v.flags) f "
                               "GROUP BY 1 ORDER BY 2 DESC"))
    s.estimates = dict(_rows(conn, f"SELECT method, count(*) FROM {latest} "
                                   "WHERE quality = 'estimated' GROUP BY 1 ORDER BY 2 DESC"))
    # what the simulator sent and what of it is stored
    s.sent = len(log.readings)
    acknowledged = log.acknowledged()
    s.acknowledged = len(acknowledged)
    stored_keys = {(m, r, ts) for m, r, ts in _rows(
        conn, "SELECT meter_id, register, ts FROM data.raw_readings")}
    with_ts = [(r.meter_id, r.register, r.ts) for r in acknowledged if r.ts is not None]
    s.acknowledged_with_ts = len(with_ts)
    s.acknowledged_stored = sum(1 for k in with_ts if k in stored_keys)
    per_meter = Counter(m for m, _r, _t in stored_keys)
    networks: dict[str, NetworkFigures] = {}
    for meter in log.meters.values():
        net = networks.setdefault(meter.service_point, NetworkFigures(meter.service_point))
        net.meters += 1
        net.stored += per_meter.get(meter.meter_id, 0)
        net.meters_heard += 1 if per_meter.get(meter.meter_id) else 0
    acked_frames = log.acked_frames
    for r in log.readings:
        meter_rec = log.meters.get(r.meter_id)
        if meter_rec is None:
            continue
        net = networks[meter_rec.service_point]
        net.sent += 1
        net.acknowledged += 1 if r.frame in acked_frames else 0
    s.networks = sorted(networks.values(), key=lambda n: n.network)
    # billing
    s.charges, s.charged = conn.execute(
        "SELECT count(*), coalesce(sum(amount), 0) FROM billing.charges").fetchone() or (
        0, Decimal(0))
    s.charges_by_tariff = {t: (n, a) for t, n, a in _rows(
        conn, "SELECT tariff_id, count(*), sum(amount) FROM billing.charges GROUP BY 1 "
              "ORDER BY 1")}
    s.top_ups, s.topped_up = conn.execute(
        "SELECT count(*), coalesce(sum(amount), 0) FROM billing.topups").fetchone() or (
        0, Decimal(0))
    s.balances, s.balance_total, s.balances_negative = conn.execute(
        "SELECT count(*), coalesce(sum(balance), 0), count(*) FILTER (WHERE balance < 0) "
        "FROM billing.balances").fetchone() or (0, Decimal(0), 0)
    s.alarm_states = dict(_rows(conn, "SELECT coalesce(alarm_state, 'none'), count(*) FROM "
                                      "billing.balances GROUP BY 1 ORDER BY 2 DESC"))
    # alerts (raised; one per alert id) and commands
    s.alerts = dict(_rows(conn, "SELECT code, count(DISTINCT alert_id) FROM ops.alerts "
                                "WHERE state = 'raised' GROUP BY 1 ORDER BY 2 DESC"))
    s.commands = {(c, st): n for c, st, n in _rows(
        conn, "SELECT command, state, count(*) FROM ops.commands GROUP BY 1, 2 ORDER BY 1, 2")}
    effects: Counter[str] = Counter()
    for c in log.commands:
        if c.command.startswith(("valve", "relay")) or "valve" in c.effect:
            effects[f"{c.command} {'ok' if c.ok else 'refused'}"] += 1
    s.device_valves = dict(effects)
    fired = log.end_stats.get("faults") or {}
    s.faults = {str(k): int(v) for k, v in sorted(fired.items()) if v}
    for level in AGG_LEVELS:
        for h in ("meter_consumption", "dimension_consumption", "tier_consumption"):
            name = f"agg.{h}_{level}"
            s.aggregates[name] = _one(conn, f"SELECT count(*) FROM {name}")
    s.zone = zone
    s.days = [tuple(r) for r in _rows(conn, SAMPLE_QUERY.format(zone=zone).rstrip(";"))]
    return s


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def render(s: DemoSummary, *, psql: str, api_url: str, report: str) -> str:
    """The summary as the demo prints it."""
    out: list[str] = []
    add = out.append
    add("READINGS")
    add(f"  sent by the fleet          {s.sent:>10,}  (acknowledged by the FEP: "
        f"{s.acknowledged:,}; polled answers are not acknowledged by any protocol)")
    add(f"  raw readings stored        {s.raw_stored:>10,}  (acknowledged and time-stamped: "
        f"{s.acknowledged_stored:,} of {s.acknowledged_with_ts:,} stored)")
    add(f"  validated readings stored  {s.validated_stored:>10,}  ({s.validated_versions:,} "
        "versions)")
    add("COLLECTION PER NETWORK (service point)")
    add(f"  {'network':<20}{'meters':>8}{'heard':>8}{'success':>10}{'sent':>10}{'acked':>10}"
        f"{'stored':>10}")
    for n in s.networks:
        add(f"  {n.network:<20}{n.meters:>8,}{n.meters_heard:>8,}{_pct(n.success):>10}"
            f"{n.sent:>10,}{n.acknowledged:>10,}{n.stored:>10,}")
    add("VEE OUTCOMES (latest version of each reading)")
    add("  faults the simulator injected: " + (", ".join(f"{k} {v:,}" for k, v in
                                                        s.faults.items()) or "none"))
    add("  quality: " + ", ".join(f"{k} {v:,}" for k, v in s.quality.items()))
    add("  by rule (flags raised): " + (", ".join(f"{k} {v:,}" for k, v in s.flags.items())
                                        or "none"))
    add("  estimates by method: " + (", ".join(f"{k} {v:,}" for k, v in s.estimates.items())
                                     or "none"))
    add("BILLING")
    add(f"  charges {s.charges:,} totalling {s.charged:,.2f} CNY; by tariff: "
        + ", ".join(f"{t} {n:,} / {a:,.2f}" for t, (n, a) in s.charges_by_tariff.items()))
    add(f"  top-ups {s.top_ups:,} totalling {s.topped_up:,.2f} CNY")
    add(f"  balances {s.balances:,} accounts, total {s.balance_total:,.2f} CNY, "
        f"{s.balances_negative:,} below zero; alarm states: "
        + ", ".join(f"{k} {v:,}" for k, v in s.alarm_states.items()))
    add("ALERTS (raised, by code)")
    add("  " + (", ".join(f"{k} {v:,}" for k, v in s.alerts.items()) or "none"))
    add("COMMANDS (control plane: command, state)")
    add("  " + (", ".join(f"{c} {st} {n:,}" for (c, st), n in s.commands.items()) or "none"))
    add("  at the devices (simulator's log): "
        + (", ".join(f"{k} {v:,}" for k, v in s.device_valves.items()) or "none"))
    add("AGGREGATES (rows)")
    for level in AGG_LEVELS:
        add(f"  {level:<8}" + "  ".join(
            f"{name.split('.')[1].rsplit('_', 1)[0]} {n:,}" for name, n in s.aggregates.items()
            if name.endswith(level)))
    add("  sample query (consumption by customer type per local day):")
    add("\n".join(f"    {line}" for line in SAMPLE_QUERY.format(zone=s.zone).splitlines()))
    for day, ctype, medium, unit, value in s.days[:12]:
        add(f"    {day}  {ctype:<12} {medium:<12} {value:>14,.1f} {unit}")
    if len(s.days) > 12:
        add(f"    … {len(s.days) - 12} more rows")
    add("WHERE TO LOOK NEXT")
    add(f"  psql      {psql}")
    add(f"  API       {api_url}/docs  (OpenAPI at {api_url}/openapi.json)")
    add(f"  report    {report}")
    return "\n".join(out)
