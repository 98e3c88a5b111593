"""Message codec: envelope encode/decode of readings vs the standard library's json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench._harness import BenchContext, BenchResult, rate
from schemas import codec
from schemas.messages import Reading


def _readings(n: int) -> list[Reading]:
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    return [Reading(meter_id=f"GAS-{i:06d}", register="volume", ts=t0 + timedelta(hours=i),
                    value=Decimal(f"{1000 + i * 0.125:.3f}"), unit="m3", received_at=t0,
                    device_id="DTU-1", fep="fep-1", protocol="cjt188-2004") for i in range(n)]


def _stdlib_encode(r: Reading) -> bytes:
    """The baseline: what a hand-written json.dumps of the same envelope costs."""
    payload = {"meter_id": r.meter_id, "register": r.register, "ts": r.ts.isoformat(),
               "value": str(r.value), "unit": r.unit, "received_at": r.received_at.isoformat(),
               "kind": r.kind, "device_id": r.device_id, "fep": r.fep, "protocol": r.protocol}
    return json.dumps({"schema": r.SCHEMA, "version": 1, "id": "x",
                       "event_time": r.received_at.isoformat(), "producer": "b",
                       "payload": payload}).encode()


def bench_codec(ctx: BenchContext) -> list[BenchResult]:
    readings = _readings(1000)
    encoded = [codec.encode(r, producer="bench") for r in readings]
    stdlib = [_stdlib_encode(r) for r in readings]

    def ours_encode() -> int:
        for r in readings:
            codec.encode(r, producer="bench", message_id="x")
        return len(readings)

    def base_encode() -> int:
        for r in readings:
            _stdlib_encode(r)
        return len(readings)

    def ours_decode() -> int:
        for data in encoded:
            codec.decode(data)
        return len(encoded)

    def base_decode() -> int:
        for data in stdlib:
            doc = json.loads(data)
            p = doc["payload"]
            Reading(meter_id=p["meter_id"], register=p["register"],
                    ts=datetime.fromisoformat(p["ts"]), value=Decimal(p["value"]),
                    unit=p["unit"], received_at=datetime.fromisoformat(p["received_at"]))
        return len(stdlib)

    repeat = 3 if ctx.quick else 7
    enc, enc_base = rate(ours_encode, repeat=repeat), rate(base_encode, repeat=repeat)
    dec, dec_base = rate(ours_decode, repeat=repeat), rate(base_decode, repeat=repeat)
    return [
        BenchResult("schemas", "envelope encode (reading)", enc, "msg/s",
                    "stdlib json.dumps", enc_base, target="faster than stdlib",
                    passed=enc > enc_base),
        BenchResult("schemas", "envelope decode (reading, typed)", dec, "msg/s",
                    "stdlib json.loads + construct", dec_base, target="faster than stdlib",
                    passed=dec > dec_base),
    ]


BENCHMARKS = [bench_codec]
