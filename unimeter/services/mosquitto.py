"""The local Mosquitto broker for the NB-IoT / LoRa MQTT ingest path (Debian package)."""

from __future__ import annotations

import os
import subprocess
import uuid

from unimeter.errors import ServiceError
from unimeter.services._proc import (
    ServiceStatus,
    apt_install,
    pid_alive,
    read_pid,
    stop_pid,
    wait_until,
)
from unimeter.services.settings import ServicesSettings

__all__ = ["LocalMosquitto", "mqtt_reachable"]

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mqtt_reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when the broker completes an MQTT CONNECT / CONNACK handshake."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"unimeter-health-{uuid.uuid4().hex[:8]}")
    try:
        client.connect(host, port, keepalive=5)
        client.loop_start()
        deadline_ok = False
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if client.is_connected():
                deadline_ok = True
                break
            time.sleep(0.05)
        return deadline_ok
    except OSError:
        return False
    finally:
        client.loop_stop()
        client.disconnect()


class LocalMosquitto:
    name = "mosquitto"

    def __init__(self, settings: ServicesSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "mosquitto"
        self.conf = self.home / "mosquitto.conf"
        self.log = self.home / "mosquitto.log"
        self.pid_file = self.home / "mosquitto.pid"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.mosquitto_port}"

    def binary(self) -> str:
        for candidate in _CANDIDATES:
            if os.path.exists(candidate):
                return candidate
        if apt_install("mosquitto"):
            for candidate in _CANDIDATES:
                if os.path.exists(candidate):
                    return candidate
        raise ServiceError("Mosquitto is not installed",
                           hint="install it: sudo apt-get install -y mosquitto (or set "
                                "UNIMETER_MQTT_URL to an existing broker)")

    def running(self) -> bool:
        return pid_alive(read_pid(self.pid_file))

    def start(self) -> bool:
        if self.running() and mqtt_reachable("127.0.0.1", self.settings.mosquitto_port):
            return False
        binary = self.binary()
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.settings.mosquitto_port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.home}/",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the state directory
        self.conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([binary, "-c", str(self.conf)],
                                stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        wait_until(lambda: mqtt_reachable("127.0.0.1", self.settings.mosquitto_port, 1.0),
                   timeout=min(self.settings.start_timeout_s, 30), what="Mosquitto",
                   alive=lambda: proc.poll() is None, log=self.log)
        return True

    def stop(self) -> bool:
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        assert pid is not None
        stop_pid(pid, timeout=10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        pid = read_pid(self.pid_file)
        if pid_alive(pid):
            assert pid is not None
            os.kill(pid, 9)

    def status(self) -> ServiceStatus:
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            return ServiceStatus(self.name, "stopped", self.address, log=self.log)
        ok = mqtt_reachable("127.0.0.1", self.settings.mosquitto_port, 2.0)
        return ServiceStatus(self.name, "running" if ok else "unreachable", self.address,
                             pid=pid, log=self.log, detail="Mosquitto (Debian)")
