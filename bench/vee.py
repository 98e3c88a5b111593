"""VEE: engine readings/s per core, readings/s through the agent and the real broker, and the
memory of per-meter state — each against a baseline measured in the same run.

* engine: hourly register reads of many gas meters through :class:`vee.engine.VeeEngine`
  with the shipped rule set, in CPU seconds of this (single-threaded) process, so other load
  on the machine does not count. Baseline: the least any VEE must do per reading — the
  consumption since the previous read and a ``ValidatedReading`` with its hour piece.
* agent: readings produced to a private topic prefix, ``unimeter pipeline`` (RocksDB state)
  validating them, the validated readings consumed back. Baseline: the same readings
  produced and consumed back through the same broker with no processing in between.
* state: the per-meter state of 100,000 daily-read gas meters after two weeks — the bytes a
  RocksDB table holds, and the Python heap when a worker keeps them in memory. Baseline: the
  last reading of each meter kept as its envelope (what the stream would hold at the least).
"""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench._harness import BenchContext, BenchResult, cpu_seconds
from schemas import codec
from schemas.messages import IntervalConsumption, LedgerMeter, Reading, ValidatedReading
from vee.engine import VeeEngine
from vee.groups import default_rules_path, load_rule_set
from vee.model import MeterInfo, MeterState, encode_state

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def _meter(i: int) -> MeterInfo:
    return MeterInfo(meter_id=f"GM-{i:06d}", qmax=Decimal("6"), size="G4",
                     customer_type="residential", account_id=f"A-{i:06d}", has_valve=True)


def _hourly(meters: int, hours: int, registers: tuple[str, ...] = ("volume",)
            ) -> list[tuple[int, Reading]]:
    out = []
    for h in range(hours):
        ts = T0 + timedelta(hours=h)
        received = ts + timedelta(seconds=40)
        for i in range(meters):
            value = Decimal(1000 + h * 0.35 + (i % 13) * 0.011 + (h % 5) * 0.007).quantize(
                Decimal("0.001"))
            for register in registers:
                out.append((i, Reading(meter_id=f"GM-{i:06d}", register=register, ts=ts,
                                       value=value, unit="m3", received_at=received)))
    return out


def _per_core(fn: object, repeat: int) -> float:
    """Items per CPU second of ``fn`` (median of ``repeat`` runs)."""
    rates = []
    for _ in range(repeat):
        gc.collect()
        start = cpu_seconds()
        done = fn()  # type: ignore[operator]
        rates.append(done / max(cpu_seconds() - start, 1e-9))
    rates.sort()
    return rates[len(rates) // 2]


def bench_engine(ctx: BenchContext) -> list[BenchResult]:
    return _engine(ctx, ("volume",), "engine, hourly register reads, shipped rules (per core)")


def bench_engine_settlement(ctx: BenchContext) -> list[BenchResult]:
    """CJ/T 188 meters send their register and its settlement-day value: two cumulative
    channels per meter, so the multi-channel steps (interval rescaling) run too."""
    return _engine(ctx, ("volume", "volume_settlement"),
                   "engine, hourly reads of a register and its settlement value (CJ/T 188), "
                   "shipped rules (per core)")


def _engine(ctx: BenchContext, registers: tuple[str, ...], name: str) -> list[BenchResult]:
    meters, hours = (300, 40) if ctx.quick else (1000, 60)
    readings = _hourly(meters, hours, registers)
    infos = [_meter(i) for i in range(meters)]
    ruleset = load_rule_set(default_rules_path())

    def engine_run() -> int:
        engine = VeeEngine(ruleset)
        states: dict[int, MeterState] = {}
        for i, r in readings:
            states[i] = engine.process(r, infos[i], states.get(i)).state
        return len(readings)

    def baseline_run() -> int:
        last: dict[tuple[int, str], tuple[datetime, Decimal]] = {}
        for i, r in readings:
            prev = last.get((i, r.register))
            intervals: tuple[IntervalConsumption, ...] = ()
            consumption = None
            if prev is not None:
                consumption = r.value - prev[1]
                intervals = (IntervalConsumption(start=prev[0], end=r.ts, volume=consumption),)
            ValidatedReading(meter_id=r.meter_id, register=r.register, ts=r.ts, value=r.value,
                             unit=r.unit, version=1, quality="validated",
                             consumption=consumption, intervals=intervals,
                             received_at=r.received_at, validated_at=r.received_at)
            last[(i, r.register)] = (r.ts, r.value)
        return len(readings)

    repeat = 3 if ctx.quick else 5
    ctx.progress(f"engine: {len(readings):,} hourly reads of {meters:,} meters, {repeat} runs")
    engine_rate = _per_core(engine_run, repeat)
    base_rate = _per_core(baseline_run, repeat)
    return [BenchResult(
        "vee", name, engine_rate,
        "readings/s", "delta + ValidatedReading only", base_rate,
        target=">= 50,000 readings/s per core", passed=engine_rate >= 50_000,
        notes="CPU seconds of one process; the machine's load does not count",
        extra={"readings": len(readings), "meters": meters, "registers": list(registers)})]


def bench_state_memory(ctx: BenchContext) -> list[BenchResult]:
    meters = 100_000
    days = 14
    sample = 2000 if ctx.quick else 5000
    ctx.progress(f"state: {sample:,} meters through {days} daily reads, scaled to 100,000")
    engine = VeeEngine(load_rule_set(default_rules_path()))
    encoded: list[bytes] = []
    last_readings: list[bytes] = []
    for i in range(sample):
        info = _meter(i)
        state = None
        reading = None
        for d in range(days + 1):
            ts = T0 + timedelta(days=d, minutes=(i * 7) % 600)
            value = Decimal(2000 + d * 1.1 + (i % 17) * 0.01).quantize(Decimal("0.001"))
            reading = Reading(meter_id=info.meter_id, register="volume", ts=ts, value=value,
                              unit="m3", received_at=ts + timedelta(seconds=30))
            state = engine.process(reading, info, state).state
        encoded.append(encode_state(state))  # type: ignore[arg-type]
        last_readings.append(codec.encode(reading, producer="fep-1",  # type: ignore[arg-type]
                                          message_id=f"m{i}"))
    state_bytes = sum(len(b) for b in encoded) / sample
    base_bytes = sum(len(b) for b in last_readings) / sample

    def heap_of(blobs: list[bytes]) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        held = {f"GM-{i:06d}".encode(): bytes(bytearray(blobs[i % len(blobs)]))
                for i in range(meters)}
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del held
        return (after - before) / 1e6

    heap = heap_of(encoded)
    heap_base = heap_of(last_readings)
    return [
        BenchResult("vee", "state per 100,000 daily gas meters, in memory (memory://)", heap,
                    "MB", "last reading envelope per meter", heap_base,
                    target="<= 40 MB per 100,000 meters", passed=heap <= 40,
                    notes=f"{state_bytes:.0f} bytes of state per meter after {days} days "
                          "(window + daily totals)"),
        BenchResult("vee", "state per 100,000 daily gas meters, serialized (RocksDB)",
                    state_bytes * meters / 1e6, "MB", "last reading envelope per meter",
                    base_bytes * meters / 1e6, target="<= 40 MB per 100,000 meters",
                    passed=state_bytes * meters / 1e6 <= 40),
    ]


# ---------------------------------------------------------------------- through the broker


def bench_agent(ctx: BenchContext) -> list[BenchResult]:
    from bench._broker import run_agent

    meters, hours = (200, 10) if ctx.quick else (500, 40)
    readings = _hourly(meters, hours)
    records = [(r.key(), codec.encode(r, producer="bench")) for _, r in readings]
    ledger = [(m.key(), codec.encode(m, producer="bench")) for m in (
        LedgerMeter(meter_id=f"GM-{i:06d}", status="active", medium="gas", updated_at=T0,
                    qmax=Decimal("6"), size="G4", account_id=f"A-{i:06d}",
                    customer_type="residential") for i in range(meters))]
    warm = [(b"WARM-1", codec.encode(Reading(
        meter_id="WARM-1", register="volume", ts=T0, value=Decimal(1), unit="m3",
        received_at=T0), producer="bench"))]
    run = run_agent(ctx, agents=["vee"], ledger={"ledger.meters": ledger}, warm=warm,
                    records=records, input_topic="readings.raw",
                    output_topic="readings.validated", outputs=len(records), what="bench/vee")
    agent_rate, base_rate, worker_cpu = run.rate, run.baseline, run.worker_cpu_s
    cpu_us = worker_cpu / len(records) * 1e6
    return [BenchResult(
        "vee", "agent: readings.raw -> readings.validated (1 worker, RocksDB, real broker)",
        agent_rate, "readings/s", "produce + consume the same readings, no processing",
        base_rate, target="(no fixed target)", passed=None,
        notes="wall clock, end to end, one worker process; includes envelope decode/encode, "
              f"ledger enrichment and acknowledged sends; the worker spent {cpu_us:,.0f} "
              "CPU-µs per reading",
        extra={"readings": len(records), "meters": meters, "worker_cpu_s": worker_cpu,
               "worker_cpu_us_per_reading": cpu_us})]


BENCHMARKS = [bench_engine, bench_engine_settlement, bench_state_memory, bench_agent]
