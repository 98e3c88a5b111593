"""Settings of the front-end processors (section ``fep``): instance, service points, limits.

Strategy: one frozen :class:`FepSettings` per process, read from ``UNIMETER_FEP_*`` and the
``fep:`` section of ``$UNIMETER_CONFIG``. A *service point* is a listening address plus a
protocol stack (optional DTU registration/heartbeat templates, framer, codec, report template)
and the list of FEP instances that serve it; several FEPs can serve one service point (behind
a TCP load balancer) and one FEP can serve several. Nested values (service points, collection
plans) come from the YAML file, or as JSON in the environment variable::

    fep:
      instance: fep-2
      service_points:
        dtu-gas:
          transport: tcp
          port: 9110
          protocol: cjt188-2004
          link: dtu
          link_protocol: dtu-text
          feps: [fep-1, fep-2]

Defaults describe the local demo network that ``unimeter simulate`` connects to.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.settings import ComponentSettings

__all__ = [
    "DEFAULT_SERVICE_POINTS",
    "FepSettings",
    "PollPlanSettings",
    "ServicePointSettings",
]

Transport = Literal["tcp", "mqtt", "modbus"]
LinkKind = Literal["dtu", "concentrator", "direct"]
AdmissionMode = Literal["ledger", "auto"]


class ServicePointSettings(BaseModel):
    """One service point: where devices connect and what they speak.

    ``transport``: ``tcp`` (DTUs, concentrators, GPRS meters connect to us), ``mqtt`` (NB-IoT
    / LoRa meters publish to the broker) or ``modbus`` (we poll RTUs; see collection plans).
    ``link``: what a TCP connection is — a transparent ``dtu`` (identified by its registration
    packet, carrying one or many meters on its serial bus), a ``concentrator`` (identified by
    its login, forwarding meter frames), or a ``direct`` meter (identified by the address of
    its first frame).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: Transport = "tcp"
    protocol: str = Field(description="Protocol of the frames on the link, as registered in "
                                      "decoders (e.g. cjt188-2004, dlt645-2007, gdw376.1).")
    link: LinkKind = "direct"
    host: str = Field(default="0.0.0.0", description="Listen address (tcp).")  # noqa: S104
    port: int = Field(default=0, ge=0, le=65535, description="Listen port (tcp); 0 = any free.")
    link_protocol: str | None = Field(
        default=None, description="DTU link template (decoders, e.g. dtu-text): its "
                                  "registration, heartbeat, logout and ack packets. Required "
                                  "for link=dtu.")
    reading_time: Literal["meter_clock", "received"] = Field(
        default="meter_clock", description="Time stamp of readings: the meter's clock when "
                                           "the frame carries one, else the time received; "
                                           "or always the time received.")
    forwarded_protocol: str | None = Field(
        default=None, description="Protocol of meter frames forwarded by a concentrator "
                                  "(376.1 AFN 10), e.g. dlt645-2007.")
    feps: tuple[str, ...] = Field(default=(), description="FEP instances serving this point; "
                                                          "empty = every instance.")
    admission: AdmissionMode = Field(
        default="ledger", description="ledger: only devices the ledger assigns to the link; "
                                      "auto: audited auto-registration (commissioning).")
    max_frame_bytes: int = Field(default=4096, ge=16, le=1 << 20,
                                 description="Largest frame accepted; the framer's buffer bound.")
    malformed_budget: int = Field(default=20, ge=1, le=100_000,
                                  description="Malformed frames per window before the link is "
                                              "closed.")
    malformed_window_s: float = Field(default=60.0, gt=0, le=86_400)
    max_connections_per_source: int = Field(default=64, ge=1, le=100_000,
                                            description="Open connections per source IP.")
    max_connections: int = Field(default=50_000, ge=1, le=1_000_000)
    proxy_protocol: bool = Field(default=False,
                                 description="tcp: every connection starts with a PROXY "
                                             "protocol v1/v2 header from the load balancer.")
    idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400,
                                  description="Close a link that sent nothing for this long.")
    identify_timeout_s: float = Field(default=30.0, gt=0, le=3600,
                                      description="Close a link that has not identified itself "
                                                  "(registration, login, first frame) by then.")
    wake_window_s: float = Field(default=30.0, gt=0, le=3600,
                                 description="mqtt: how long a meter listens after an uplink.")
    mqtt_topic: str = Field(default="meters/+/up",
                            description="mqtt: uplink topic filter under the MQTT topic root; "
                                        "the one '+' is the device id.")
    mqtt_down_topic: str = Field(default="meters/{device}/down",
                                 description="mqtt: downlink topic (acks, commands) under the "
                                             "topic root.")
    mqtt_shared_group: str | None = Field(
        default="unimeter-fep", description="mqtt: shared-subscription group, so N FEPs "
                                            "split the uplinks (None = every FEP gets all).")

    @model_validator(mode="after")
    def _check(self) -> ServicePointSettings:
        if self.transport == "tcp" and self.link == "dtu" and not self.link_protocol:
            raise ValueError("link=dtu needs a link_protocol (the DTU link template: how the "
                             "DTU says who it is)")
        if self.link == "concentrator" and not self.forwarded_protocol:
            raise ValueError("link=concentrator needs forwarded_protocol (e.g. dlt645-2007)")
        if self.transport == "mqtt" and self.mqtt_topic.count("+") != 1:
            raise ValueError("mqtt_topic needs exactly one '+' (the device id)")
        return self

    def served_by(self, instance: str) -> bool:
        return not self.feps or instance in self.feps


class PollPlanSettings(BaseModel):
    """A collection plan the FEP runs: ask devices that do not report by themselves.

    ``target``: ``modbus`` polls the RTUs listed in ``endpoints`` (``host:port/unit``) with the
    register-map template ``template``; ``link`` sends the unified command ``command`` (e.g.
    ``read_now``) to every meter the ledger assigns to links of ``service_point``;
    ``concentrator`` reads the archives of the concentrators of ``service_point`` (Q/GDW 376.1
    class 1/2 data of every measuring point the ledger knows, ``points_per_request`` at a time:
    ``command`` ``read_now`` = current energy, AFN 0C F129; ``read_history`` = yesterday's
    daily frozen energy, AFN 0D F161) instead of forwarding one read per meter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    service_point: str
    target: Literal["modbus", "link", "concentrator"] = "link"
    points_per_request: int = Field(default=16, ge=1, le=256,
                                    description="concentrator: measuring points per request.")
    interval_s: float = Field(default=900.0, gt=0, le=31 * 86_400)
    jitter_s: float = Field(default=30.0, ge=0, le=86_400,
                            description="Random delay added to each run (spreads the load).")
    per_link_concurrency: int = Field(default=1, ge=1, le=256,
                                      description="Requests in flight per link (a serial bus "
                                                  "behind a DTU answers one at a time).")
    command: str = Field(default="read_now")
    template: str | None = Field(default=None, description="Modbus register-map template.")
    endpoints: tuple[str, ...] = Field(default=(), description="modbus: host:port/unit list.")
    timeout_s: float = Field(default=5.0, gt=0, le=600)
    retries: int = Field(default=1, ge=0, le=10)


def _default_points() -> dict[str, ServicePointSettings]:
    return dict(DEFAULT_SERVICE_POINTS)


DEFAULT_SERVICE_POINTS: dict[str, ServicePointSettings] = {
    # CJ/T 188 gas and water meters on RS-485 buses behind transparent DTUs
    "dtu-cjt188": ServicePointSettings(
        transport="tcp", protocol="cjt188-2004", link="dtu", port=9110,
        link_protocol="dtu-text", max_connections_per_source=10_000),
    # DL/T 645 electricity meters behind transparent DTUs
    "dtu-dlt645": ServicePointSettings(
        transport="tcp", protocol="dlt645-2007", link="dtu", port=9111,
        link_protocol="dtu-text", max_connections_per_source=10_000),
    # DL/T 645 electricity meters read through Q/GDW 376.1 concentrators (AFN 10)
    "concentrator-376": ServicePointSettings(
        transport="tcp", protocol="qgdw376.1", link="concentrator", port=9120,
        forwarded_protocol="dlt645-2007", max_connections_per_source=10_000),
    # GPRS electricity meters that connect by themselves (identified by their first frame)
    "direct-dlt645": ServicePointSettings(
        transport="tcp", protocol="dlt645-2007", link="direct", port=9130,
        max_connections_per_source=10_000),
    # NB-IoT gas meters through the operator platform's MQTT bridge
    "nbiot-mqtt": ServicePointSettings(transport="mqtt", protocol="cjt188-2004"),
}


class FepSettings(ComponentSettings):
    """One front-end processor process."""

    section: ClassVar[str] = "fep"

    instance: str = Field(default="fep-1", pattern=r"^[A-Za-z0-9._-]{1,64}$",
                          description="This FEP's name: in frames.raw, the session registry "
                                      "and its command consumer group. Unique per process.")
    advertise: str = Field(default="", description="host of this instance as other processes "
                                                   "reach it (informational, in the registry).")
    service_points: dict[str, ServicePointSettings] = Field(default_factory=_default_points)
    poll_plans: dict[str, PollPlanSettings] = Field(default_factory=dict)

    # -- durability
    spool_dir: Path = Field(default=Path(".unimeter/spool"),
                            description="Local spool; each instance uses <spool_dir>/<instance>.")
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 16,
                                 description="Spool bound; when full the FEP stops "
                                             "acknowledging devices.")
    spool_segment_bytes: int = Field(default=16 << 20, ge=1 << 12)
    kafka_ack_timeout_s: float = Field(default=5.0, gt=0, le=300,
                                       description="Wait this long for Kafka's ack before "
                                                   "spooling the data instead.")
    # 10 ms, not 2: five times fewer produce requests, each one send to the broker (on one
    # machine the kernel's loopback delivery is charged to the sender): ≈ +10 % frames per
    # FEP CPU-second in `bench/ingest.py` (2026-12-07, alternated: 5,892 and 5,857 at 2 ms,
    # 6,463 and 6,746 at 10 ms), for 8 ms more before a device is acknowledged.
    publish_linger_ms: float = Field(default=10.0, ge=0, le=1000,
                                     description="Collect records this long into one batch.")
    publish_max_records: int = Field(default=20_000, ge=1, le=1_000_000,
                                     description="Records per publish round at most.")
    publish_max_inflight: int = Field(default=4, ge=1, le=64,
                                      description="Publish rounds awaiting Kafka at once.")

    # -- time
    clock_file: Path | None = Field(
        default=None,
        description="A simulation's time line (written by `unimeter demo`): while the file "
                    "exists, reception times, sent frames and device events follow the "
                    "simulated clock it describes instead of the real one. Never for a real "
                    "fleet.")

    # -- admission, registry and commands
    ledger_load_timeout_s: float = Field(default=60.0, gt=0, le=3600,
                                         description="Wait this long at start-up for the "
                                                     "ledger.meters topic to be read.")
    ledger_plans: bool = Field(default=True,
                               description="Run the ledger's collection plans "
                                           "(ledger.collection_plan_devices) for the service "
                                           "points served; needs the postgres registry.")
    ledger_plans_refresh_s: float = Field(default=300.0, gt=0, le=86_400)
    ledger_plan_timeout_s: float = Field(default=10.0, gt=0, le=600,
                                         description="Reply timeout of a ledger plan's reads.")
    registry: Literal["postgres", "memory"] = Field(
        default="postgres", description="Shared session registry and command wake-queue "
                                        "(postgres) or a single-instance in-memory one.")
    registry_flush_s: float = Field(default=1.0, gt=0, le=60)
    instance_ttl_s: float = Field(default=30.0, gt=0, le=3600,
                                  description="An FEP silent this long is presumed dead; its "
                                              "claimed commands are released.")
    command_expire_every_s: float = Field(default=5.0, gt=0, le=3600,
                                          description="Sweep the wake-queue for commands past "
                                                      "their expiry this often.")
    command_default_ttl_s: float = Field(default=24 * 3600.0, gt=0,
                                         description="Expiry of a command that carries none.")
    alert_interval_s: float = Field(default=3600.0, ge=0,
                                    description="At most one alert per (reason, link, address) "
                                                "in this interval.")

    @field_validator("service_points")
    @classmethod
    def _check_points(cls, value: dict[str, ServicePointSettings]
                      ) -> dict[str, ServicePointSettings]:
        import re

        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
                raise ValueError(f"service point name '{name}': allowed letters, digits . _ -")
        return value

    @model_validator(mode="after")
    def _check_plans(self) -> FepSettings:
        for name, plan in self.poll_plans.items():
            if plan.service_point not in self.service_points:
                raise ValueError(f"poll plan '{name}' names unknown service point "
                                 f"'{plan.service_point}' (known: "
                                 f"{', '.join(sorted(self.service_points))})")
        return self

    def instance_spool_dir(self) -> Path:
        return self.spool_dir / self.instance

    def points_served(self, names: tuple[str, ...] = ()) -> dict[str, ServicePointSettings]:
        """The service points this instance runs: ``names`` if given, else all it serves."""
        from schemas.errors import ConfigurationError

        if names:
            unknown = [n for n in names if n not in self.service_points]
            if unknown:
                raise ConfigurationError(
                    f"unknown service point(s) {', '.join(unknown)}",
                    where="fep.service_points",
                    hint=f"known: {', '.join(sorted(self.service_points))}")
            return {n: self.service_points[n] for n in names}
        return {n: p for n, p in self.service_points.items() if p.served_by(self.instance)}
