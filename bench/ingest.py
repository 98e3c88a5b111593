"""FEP throughput: frames per second one FEP process sustains from the simulator into Kafka.

Setup, all on this machine in this run: a topic prefix of its own; the simulator's fleet in
the ledger (``ledger.meters``); one ``unimeter fep`` process (memory registry, its own
spool) serving the two DTU service points on free ports; one ``unimeter simulate --burst``
process whose DTUs keep a window of uploads in flight and retransmit what is not
acknowledged. A frame counts when the simulator received its acknowledgement — i.e. after the
FEP had its ``frames.raw`` record and readings acknowledged by Kafka (acks=all). Each frame
makes four Kafka records (frame in, two readings, the ack frame out).

Baseline, same run, same client: the raw aiokafka producer (``create_batch`` /
``send_batch``, acks=all, idempotent) writing records of the FEP's average size — the ceiling
of what any FEP built on this client could publish — per second and per CPU-second of the
producing process. CPU seconds of the FEP and of the simulator are reported apart (from
``/proc``); frames per FEP CPU-second against the producer's records per CPU-second ÷ 4 is
the comparison the machine's other load does not move. Target: ≥ 20,000 frames/s per FEP
process.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench._harness import BenchContext, BenchResult, cpu_seconds

TARGET_FRAMES_S = 20_000
_RECORDS_PER_FRAME = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _control(port: int, line: str) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data))


async def _raw_producer_rate(kafka: Any, topic: str, records: int, size: int
                             ) -> tuple[float, float]:
    """Records per second and records per CPU-second of this process (the producer alone
    runs in it then)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=0,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        parts = sorted(await producer.partitions_for(topic))
        value = b"x" * size
        per_round = 20_000
        started, cpu0 = time.perf_counter(), cpu_seconds()
        sent = 0
        while sent < records:
            futures = []
            batches = {p: producer.create_batch() for p in parts}
            for i in range(per_round):
                p = parts[i % len(parts)]
                if batches[p].append(key=b"M%06d" % i, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batches[p], topic, partition=p))
                    batches[p] = producer.create_batch()
                    batches[p].append(key=b"M%06d" % i, value=value, timestamp=None)
            for p, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=p))
            await asyncio.gather(*futures)
            sent += per_round
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
        return sent / elapsed, sent / max(cpu, 1e-6)
    finally:
        await producer.stop()


def bench_fep(ctx: BenchContext) -> list[BenchResult]:
    from schemas.topics import TopicSpec
    from unimeter.topics import create_topics, delete_topics

    kafka = ctx.config.kafka.model_copy(update={
        "topic_prefix": f"bench.ingest.{uuid.uuid4().hex[:6]}.", "default_partitions": 6})
    report = create_topics(kafka)
    raw_spec = TopicSpec("raw", "key", "raw producer baseline", ())
    create_topics(kafka, (raw_spec,))
    meters = 4000 if ctx.quick else 8000
    measure_s = 10.0 if ctx.quick else 20.0
    port_188, port_645, control = _free_port(), _free_port(), _free_port()
    points = {
        "dtu-cjt188": {"transport": "tcp", "protocol": "cjt188-2004", "link": "dtu",
                       "host": "127.0.0.1", "port": port_188, "link_protocol": "dtu-text",
                       "max_connections_per_source": 100_000},
        "dtu-dlt645": {"transport": "tcp", "protocol": "dlt645-2007", "link": "dtu",
                       "host": "127.0.0.1", "port": port_645, "link_protocol": "dtu-text",
                       "max_connections_per_source": 100_000},
    }
    env = {**os.environ, "UNIMETER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
           "UNIMETER_KAFKA_BOOTSTRAP": kafka.bootstrap,
           "UNIMETER_FEP_INSTANCE": "bench-fep", "UNIMETER_FEP_REGISTRY": "memory",
           "UNIMETER_FEP_SERVICE_POINTS": json.dumps(points),
           "UNIMETER_FEP_SPOOL_DIR": str(ctx.scratch / "spool"),
           "UNIMETER_SIMULATOR_DTU_PORT": str(port_188),
           "UNIMETER_SIMULATOR_DTU645_PORT": str(port_645),
           "UNIMETER_SIMULATOR_WINDOW": "16", "UNIMETER_SIMULATOR_ACK_TIMEOUT_S": "30"}
    unimeter = [sys.executable, "-m", "unimeter"]
    ctx.progress(f"publishing a {meters}-meter fleet to the ledger")
    subprocess.run([*unimeter, "simulate", "--meters", str(meters), "--kinds", "dtu",
                    "--publish-ledger", "--duration", "0", "--log", str(ctx.scratch / "l.jsonl")],
                   env=env, check=True, capture_output=True)
    fep = subprocess.Popen([*unimeter, "fep", "--status-every", "0"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sim = None
    try:
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port_645)) == 0:
                    break
            if fep.poll() is not None:
                raise RuntimeError(f"the FEP did not start: {fep.stderr.read().decode()[-2000:]}"
                                   if fep.stderr else "the FEP did not start")
            time.sleep(0.1)
        ctx.progress("FEP up; starting the simulator (burst)")
        sim = subprocess.Popen([*unimeter, "simulate", "--meters", str(meters), "--kinds", "dtu",
                                "--burst", "--speed", "60", "--control-port", str(control),
                                "--log", str(ctx.scratch / "sim.jsonl")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(240):  # the simulator's start-up is slow on a loaded machine
            if sim.poll() is not None:
                raise RuntimeError(f"the simulator exited with status {sim.returncode}")
            try:
                _control(control, "stats")
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(8.0)  # connect, register, warm up
        a0, f0, s0, t0 = (_control(control, "stats").get("acked_frames", 0), _cpu_s(fep.pid),
                          _cpu_s(sim.pid), time.monotonic())
        time.sleep(measure_s)
        a1, f1, s1, t1 = (_control(control, "stats").get("acked_frames", 0), _cpu_s(fep.pid),
                          _cpu_s(sim.pid), time.monotonic())
        stats = _control(control, "stats")
    finally:
        for proc in (sim, fep):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    elapsed = t1 - t0
    frames_s = (a1 - a0) / elapsed
    fep_cpu = (f1 - f0) / elapsed
    sim_cpu = (s1 - s0) / elapsed
    ctx.progress(f"{frames_s:,.0f} frames/s; FEP CPU {fep_cpu:.2f}, simulator CPU {sim_cpu:.2f}")
    ctx.progress("baseline: raw aiokafka producer, same records size")
    raw, raw_per_cpu = asyncio.run(_raw_producer_rate(kafka, kafka.topic(raw_spec.name),
                                                      100_000 if ctx.quick else 300_000, 420))
    raw_frames = raw / _RECORDS_PER_FRAME
    try:
        delete_topics(kafka, [*report.created, kafka.topic(raw_spec.name)])
    except Exception as exc:  # cleanup only
        ctx.progress(f"(topics not deleted: {exc})")
    load = os.getloadavg()[0]
    notes = (f"{meters}-meter fleet, {stats.get('links', '?')} DTU links, window 16; "
             f"FEP CPU {fep_cpu:.2f} cores, simulator CPU {sim_cpu:.2f} cores; ack p50 "
             f"{stats.get('ack_p50_ms')} ms, p99 {stats.get('ack_p99_ms')} ms; "
             f"{_RECORDS_PER_FRAME} Kafka records per frame; load average {load:.1f}")
    return [
        BenchResult("ingest", "FEP frames/s (simulator → FEP → Kafka, acknowledged)", frames_s,
                    "frames/s", "raw aiokafka producer ÷ 4 records/frame", raw_frames,
                    target=f">= {TARGET_FRAMES_S:,} frames/s", passed=frames_s >= TARGET_FRAMES_S,
                    notes=notes, extra={"fep_cpu_cores": fep_cpu, "simulator_cpu_cores": sim_cpu,
                                        "raw_producer_records_s": raw,
                                        "raw_producer_records_cpu_s": raw_per_cpu,
                                        "ack_p50_ms": stats.get("ack_p50_ms"),
                                        "ack_p99_ms": stats.get("ack_p99_ms"),
                                        "load_average": load}),
        # the same comparison per CPU-second: what the machine's other load does to the
        # wall-clock figures cancels out
        BenchResult("ingest", "FEP frames per CPU-second", frames_s / max(fep_cpu, 1e-6),
                    "frames/CPU-s", "raw aiokafka producer records per CPU-second ÷ 4",
                    raw_per_cpu / _RECORDS_PER_FRAME,
                    notes="FEP process only; the producer's CPU is the bench process's"),
    ]


BENCHMARKS = [bench_fep]
