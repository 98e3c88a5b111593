"""The local Apache Kafka 4.x broker: a single KRaft node whose jars come from Maven Central.

Strategy: Maven resolves ``org.apache.kafka:kafka_2.13`` and a Log4j 2 backend into
``<state>/kafka/lib`` once (the POM of the broker carries no logging backend, and a binding
that does not match the resolved SLF4J API logs nothing, so the pair is pinned here and the
start-up check asserts the log file is written). The storage is formatted once; the broker
runs detached with a pid file; health is a real ``DescribeCluster`` call, never a sleep.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from unimeter.errors import ServiceError
from unimeter.services._proc import (
    ServiceStatus,
    pid_alive,
    read_pid,
    require_binary,
    stop_pid,
    tail,
    wait_until,
)
from unimeter.services.settings import ServicesSettings

__all__ = ["LocalKafka", "kafka_reachable"]

# Kafka 4.0.x compiles against SLF4J 1.7.x: the matching Log4j 2 binding is log4j-slf4j-impl.
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.unimeter</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>{binding}</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def kafka_reachable(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when a broker answers a DescribeCluster request at ``bootstrap``."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, RetriableError

    unreachable = (RetriableError, KafkaConnectionError, KafkaTimeoutError, OSError)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
                                 bootstrap_timeout_ms=timeout_ms,
                                 client_id="unimeter-health")
    except unreachable:
        return False
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except unreachable:
        return False
    finally:
        admin.close()


class LocalKafka:
    """Fetch, configure, format, start, check and stop the local broker."""

    name = "kafka"

    def __init__(self, settings: ServicesSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.lib = self.home / "lib"
        self.data = self.home / "data"
        self.config = self.home / "config"
        self.log = self.home / "logs" / "server.log"
        self.stdout = self.home / "logs" / "stdout.log"
        self.pid_file = self.home / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    # ------------------------------------------------------------------ jars

    def _marker(self) -> str:
        return f"kafka_2.13-{self.settings.kafka_version} log4j-{self.settings.log4j_version}"

    def fetched(self) -> bool:
        marker = self.lib / ".complete"
        return marker.exists() and marker.read_text().strip() == self._marker()

    def fetch(self) -> None:
        """Resolve the broker jars from Maven Central into ``lib/`` (once per version)."""
        if self.fetched():
            return
        java = require_binary("java", package="openjdk-17-jre-headless")
        self._check_java(java)
        mvn = require_binary("mvn", package="maven")
        self.home.mkdir(parents=True, exist_ok=True)
        pom = self.home / "pom.xml"
        pom.write_text(_POM.format(kafka=self.settings.kafka_version,
                                   log4j=self.settings.log4j_version,
                                   binding=self._slf4j_binding()))
        staging = self.home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"Maven could not resolve kafka_2.13 {self.settings.kafka_version}",
                hint="check that Maven Central is reachable (mvn -v; ~/.m2/settings.xml); "
                     f"Maven said: {(result.stdout + result.stderr).strip()[-800:]}",
            )
        jars = {p.name for p in staging.glob("*.jar")}
        slf4j = next((j for j in jars if j.startswith("slf4j-api-")), "")
        binding = self._slf4j_binding()
        if slf4j.startswith("slf4j-api-2.") != (binding == "log4j-slf4j2-impl"):
            raise ServiceError(
                f"SLF4J API {slf4j} does not match the Log4j binding {binding}: the broker "
                "would log nothing",
                hint="set UNIMETER_SERVICES_KAFKA_VERSION to a tested release (4.0.x)",
            )
        shutil.rmtree(self.lib, ignore_errors=True)
        staging.rename(self.lib)
        (self.lib / ".complete").write_text(self._marker())

    def _slf4j_binding(self) -> str:
        # Kafka 4.0 depends on slf4j-api 1.7.36; later 4.x lines moved to SLF4J 2.
        minor = int(self.settings.kafka_version.split(".")[1])
        return "log4j-slf4j-impl" if minor == 0 else "log4j-slf4j2-impl"

    @staticmethod
    def _check_java(java: str) -> None:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        text = result.stderr + result.stdout
        version = ""
        for token in text.split():
            if token.strip('"')[:2].isdigit():
                version = token.strip('"')
                break
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
        if major < 17:
            raise ServiceError(f"Kafka 4 needs Java 17 or newer; found '{version or text[:60]}'",
                               hint="install it: sudo apt-get install -y openjdk-17-jre-headless")

    # ------------------------------------------------------------------ config and storage

    def _write_config(self) -> Path:
        self.config.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        props = self.config / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},"
            f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # The default 3000 ms delays every consumer-group join; nothing to wait for here.
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "delete.topic.enable=true",
            "log.retention.hours=168",
            "log.segment.bytes=134217728",
            "",
        ]))
        (self.config / "log4j2.properties").write_text(_LOG4J2.format(log=self.log))
        return props

    def _java_cmd(self, main: str, *args: str, heap: str | None = None) -> list[str]:
        java = require_binary("java", package="openjdk-17-jre-headless")
        cmd = [java]
        if heap:
            cmd += [f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        cmd += ["-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.config / 'log4j2.properties'}",
                "-cp", f"{self.lib}/*", main, *args]
        return cmd

    def _format_once(self, props: Path) -> None:
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        cluster_id = _kafka_uuid()
        cmd = self._java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id,
                             "-c", str(props))
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError("formatting the Kafka storage failed",
                               where=str(self.data),
                               hint=(result.stdout + result.stderr).strip()[-800:])

    # ------------------------------------------------------------------ lifecycle

    def running(self) -> bool:
        return pid_alive(read_pid(self.pid_file))

    def start(self) -> bool:
        """Start the broker; returns False when it was already running (harmless)."""
        if self.running():
            # Already running (perhaps still starting): wait for it, never start a second one.
            wait_until(lambda: kafka_reachable(self.bootstrap, 2000),
                       timeout=self.settings.start_timeout_s, what="the running Kafka",
                       alive=self.running, log=self.log)
            return False
        self.fetch()
        props = self._write_config()
        self._format_once(props)
        self.stdout.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stdout, "ab") as out:
            proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(props), heap=self.settings.kafka_heap),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )
        self.pid_file.write_text(str(proc.pid))
        wait_until(lambda: kafka_reachable(self.bootstrap, 2000),
                   timeout=self.settings.start_timeout_s, what="Kafka",
                   alive=lambda: proc.poll() is None, log=self.log if self.log.exists()
                   else self.stdout)
        if not self.log.exists() or self.log.stat().st_size == 0:
            raise ServiceError("Kafka started but its log is empty: the Log4j binding does not "
                               "match SLF4J", where=str(self.log),
                               hint="delete the lib folder and run `unimeter services up` again")
        return True

    def stop(self) -> bool:
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        assert pid is not None
        stop_pid(pid, timeout=60)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, for fault tests: the broker must recover its log on the next start.

        Returns once the process is gone: a ``start()`` right after must not find the dying
        broker "already running" and wait on it (it then reported "the running Kafka exited
        during start-up" instead of starting a new one).
        """
        pid = read_pid(self.pid_file)
        if pid_alive(pid):
            assert pid is not None
            os.kill(pid, 9)
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def status(self) -> ServiceStatus:
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            return ServiceStatus(self.name, "stopped", self.bootstrap, log=self.log)
        state = "running" if kafka_reachable(self.bootstrap, 2000) else "unreachable"
        return ServiceStatus(self.name, state, self.bootstrap, pid=pid, log=self.log,
                             detail=f"Kafka {self.settings.kafka_version} KRaft, heap "
                                    f"{self.settings.kafka_heap}")

    def log_tail(self) -> str:
        return tail(self.log)


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not '-'-led."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text
