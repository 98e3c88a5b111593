"""What an import file may contain: one :class:`Kind` per sheet / CSV file, its columns and
types, the ledger table it lands in, and the order kinds are applied in.

Strategy: the spec is the one source of truth for parsing cells, validating rows, staging
them with binary COPY, upserting them and exporting them again — so an exported file
imports back unchanged. Cells are text as a person types them (``yes``/``no`` booleans,
``2025-01-01`` dates in the utility's zone, ``;``-separated lists, tariff tiers as
``400:2.67;900:3.15;:3.94``); a column missing from a file is left as it is in the ledger
(new rows take the column default), an empty cell clears the value to its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["KINDS", "KIND_ORDER", "Column", "Kind", "kind_of"]

# Column types: text, id, int, decimal, bool, ts, json, time, list, tiers
#   id   = a natural key: no surrounding blanks, no control characters, at most 64 chars


@dataclass(frozen=True)
class Column:
    """One column of an import kind."""

    name: str
    type: str = "text"
    required: bool = False
    #: Allowed values (for text columns).
    choices: tuple[str, ...] = ()
    #: Value stored when the cell is empty: ``None`` = SQL NULL.
    empty: object = None
    #: Kind (or reference table) this column refers to.
    ref: str | None = None
    #: PostgreSQL type of the staging column.
    pg: str = "text"
    #: Target table when a kind spans two tables (meters: devices + meters).
    table: str = ""
    #: An empty cell keeps the ledger's value (the column default for a new row): for values
    #: the ledger stamps itself (installation time) or that follow a lifecycle (status).
    keep_if_empty: bool = False
    help: str = ""


def _c(name: str, type_: str = "text", **kw: object) -> Column:
    pg = {"text": "text", "id": "text", "int": "int4", "decimal": "numeric", "bool": "bool",
          "ts": "timestamptz", "json": "jsonb", "time": "time", "list": "text[]",
          "tiers": "jsonb"}[type_]
    if "empty" not in kw:
        kw["empty"] = {"text": "", "json": {}, "list": [], "tiers": []}.get(type_)
    return Column(name, type_, pg=pg, **kw)  # type: ignore[arg-type]


MEDIA = ("gas", "water", "heat", "electricity")
STATUSES = ("in_stock", "installed", "active", "removed")


@dataclass(frozen=True)
class Kind:
    """A sheet / CSV file kind: where it lands and which columns it has."""

    name: str
    table: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    #: Column naming the parent of the same kind (rows are applied parents first).
    parent: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    #: Columns (by name) this kind writes to a second table, keyed by the same id.
    second_table: str = ""
    second_key: str = ""
    columns_by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns_by_name", {c.name: c for c in self.columns})

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


_DEVICE_COLUMNS = (
    _c("device_type", "id", required=True, ref="device_types"),
    _c("serial_no"),
    _c("address", help="protocol address (CJ/T 188 14 digits, DL/T 645 12 digits …)"),
    _c("status", choices=STATUSES, empty="in_stock", keep_if_empty=True),
    _c("parent_device_id", "id", ref="devices"),
    _c("parent_port"),
    _c("point_no", "int"),
    _c("link_id", "id"),
    _c("service_point_id", "id", ref="service_points"),
    _c("location_id", "id", ref="locations"),
    _c("latitude", "decimal"),
    _c("longitude", "decimal"),
    _c("imei", empty=None),
    _c("iccid", empty=None),
    _c("firmware"),
    _c("installed_at", "ts", keep_if_empty=True),
    _c("parameters", "json"),
)

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("manufacturers", "manufacturers", ("manufacturer_id",), (
        _c("manufacturer_id", "id", required=True), _c("name", required=True),
        _c("country"), _c("contact"))),
    Kind("vee_groups", "vee_groups", ("vee_group_id",), (
        _c("vee_group_id", "id", required=True), _c("description"), _c("spec"))),
    Kind("device_types", "device_types", ("device_type",), (
        _c("device_type", "id", required=True),
        _c("kind", required=True, choices=("meter", "dtu", "rtu", "concentrator", "collector")),
        _c("manufacturer_id", "id", required=True, ref="manufacturers"),
        _c("model"), _c("medium", choices=MEDIA, empty=None),
        _c("protocol", required=True), _c("protocol_variant"), _c("frame_template"),
        _c("report_template"), _c("command_handler"), _c("command_variant"),
        _c("transport", choices=("tcp", "nbiot", "mqtt", "modbus_tcp", "lora", "rf", "mbus",
                                 "rs485", "ic_card", "file"), empty="tcp"),
        _c("wake_mode", choices=("online", "on_wake"), empty="online"),
        _c("has_valve", "bool", empty=False), _c("valve_arm_supported", "bool", empty=False),
        _c("read_back", "bool", empty=True),
        _c("default_vee_group_id", "id", ref="vee_groups"),
        _c("capabilities", "json")), aliases=("types",)),
    Kind("org_units", "org_units", ("org_unit_id",), (
        _c("org_unit_id", "id", required=True), _c("parent_id", "id", ref="org_units"),
        _c("kind", choices=("company", "branch", "station", "team", "department"),
           empty="branch"),
        _c("name", required=True)), parent="parent_id", aliases=("organisation", "orgs")),
    Kind("locations", "locations", ("location_id",), (
        _c("location_id", "id", required=True),
        _c("kind", required=True, choices=("region", "area", "building", "unit")),
        _c("parent_id", "id", ref="locations"), _c("name", required=True), _c("address"),
        _c("latitude", "decimal"), _c("longitude", "decimal"),
        _c("org_unit_id", "id", ref="org_units")), parent="parent_id", aliases=("places",)),
    Kind("supply_nodes", "supply_nodes", ("supply_node_id",), (
        _c("supply_node_id", "id", required=True),
        _c("kind", required=True, choices=("source", "station", "regulator", "pressure_zone",
                                           "district", "pipe")),
        _c("parent_id", "id", ref="supply_nodes"), _c("name", required=True),
        _c("medium", choices=MEDIA, empty="gas"), _c("pressure_level"),
        _c("latitude", "decimal"), _c("longitude", "decimal"), _c("geometry", "json", empty=None)),
        parent="parent_id", aliases=("supply_network", "network_nodes")),
    Kind("service_points", "service_points", ("service_point_id",), (
        _c("service_point_id", "id", required=True), _c("protocol", required=True),
        _c("transport", choices=("tcp", "udp", "mqtt", "modbus_tcp", "http", "file", "serial"),
           empty="tcp"),
        _c("listen_host", empty="0.0.0.0"), _c("listen_port", "int"),  # noqa: S104
        _c("description"), _c("enabled", "bool", empty=True))),
    Kind("fep_assignments", "fep_assignments", ("service_point_id", "fep_id"), (
        _c("service_point_id", "id", required=True, ref="service_points"),
        _c("fep_id", "id", required=True),
        _c("role", choices=("primary", "standby"), empty="primary")), aliases=("feps",)),
    Kind("customers", "customers", ("customer_id",), (
        _c("customer_id", "id", required=True),
        _c("customer_type", "id", required=True, ref="customer_types"),
        _c("name", required=True), _c("phone"), _c("email"), _c("id_number"),
        _c("postal_address"))),
    Kind("tariffs", "tariffs", ("tariff_id",), (
        _c("tariff_id", "id", required=True), _c("name"),
        _c("medium", choices=MEDIA, empty="gas"), _c("currency", empty="CNY"),
        _c("unit", empty="m3"), _c("description"))),
    Kind("tariff_versions", "tariff_versions", ("tariff_id", "version"), (
        _c("tariff_id", "id", required=True, ref="tariffs"),
        _c("version", "int", required=True),
        _c("kind", required=True, choices=("step", "flat", "tou", "realtime")),
        _c("effective_from", "ts", required=True), _c("effective_to", "ts"),
        _c("cycle", choices=("year", "month"), empty="year"),
        _c("cycle_start_month", "int", empty=1), _c("cycle_start_day", "int", empty=1),
        _c("tiers", "tiers"), _c("tou", "json"), _c("reason")), aliases=("prices",)),
    Kind("accounts", "accounts", ("account_id",), (
        _c("account_id", "id", required=True),
        _c("customer_id", "id", required=True, ref="customers"),
        _c("location_id", "id", ref="locations"),
        _c("billing_mode", choices=("prepaid_money", "prepaid_volume", "postpaid"),
           empty="prepaid_money"),
        _c("tariff_id", "id", ref="tariffs"),
        _c("status", choices=("active", "suspended", "closed"), empty="active"),
        _c("protected", "bool", empty=False), _c("protected_reason"),
        _c("alarm1", "decimal"), _c("alarm2", "decimal"),
        _c("overdraft_limit", "decimal", empty=0), _c("max_balance", "decimal"),
        _c("reconnect_limit", "decimal", empty=0), _c("opened_at", "ts", keep_if_empty=True))),
    Kind("devices", "devices", ("device_id",), (
        _c("device_id", "id", required=True), *_DEVICE_COLUMNS),
        parent="parent_device_id",
        description="any device; meters may come in the meters sheet instead"),
    Kind("meters", "devices", ("meter_id",), (
        _c("meter_id", "id", required=True), *_DEVICE_COLUMNS,
        _c("medium", required=True, choices=MEDIA, table="meters"),
        _c("size", "id", ref="meter_sizes", table="meters"),
        _c("qmax", "decimal", table="meters"),
        _c("register_digits", "int", empty=5, table="meters"),
        _c("register_decimals", "int", empty=3, table="meters"),
        _c("unit", empty="m3", table="meters"),
        _c("multiplier", "decimal", empty=1, table="meters"),
        _c("has_valve", "bool", table="meters"),
        _c("account_id", "id", ref="accounts", table="meters"),
        _c("tariff_id", "id", ref="tariffs", table="meters"),
        _c("supply_node_id", "id", ref="supply_nodes", table="meters"),
        _c("vee_group_id", "id", ref="vee_groups", table="meters"),
        _c("initial_reading", "decimal", empty=0, table="meters")),
        parent="parent_device_id", second_table="meters", second_key="meter_id",
        description="a meter device and its meter attributes in one row"),
    Kind("network", "devices", ("device_id",), (
        _c("device_id", "id", required=True, ref="devices"),
        _c("parent_device_id", "id", ref="devices"), _c("parent_port"),
        _c("point_no", "int")), parent="parent_device_id", aliases=("links",),
        description="re-homes existing devices in the collection network"),
    Kind("collection_plans", "collection_plans", ("plan_id",), (
        _c("plan_id", "id", required=True), _c("name"), _c("command", empty="read_now"),
        _c("registers", "list"), _c("params", "json"), _c("interval_s", "int"),
        _c("schedule"), _c("window_start", "time"), _c("window_end", "time"),
        _c("priority", "int", empty=5), _c("retries", "int", empty=2),
        _c("enabled", "bool", empty=True), _c("description"),
        _c("targets", "list", required=True,
           help="kind:id;… with kind device, subtree, location, device_type, "
                "service_point, account, or 'all'")), aliases=("plans",)),
)}

#: The order kinds are applied in (references first).
KIND_ORDER: tuple[str, ...] = (
    "manufacturers", "vee_groups", "device_types", "org_units", "locations", "supply_nodes",
    "service_points", "fep_assignments", "customers", "tariffs", "tariff_versions", "accounts",
    "devices", "meters", "network", "collection_plans",
)
assert set(KIND_ORDER) == set(KINDS)

_ALIASES = {alias: k.name for k in KINDS.values() for alias in (k.name, *k.aliases)}


def kind_of(name: str) -> str | None:
    """The kind a sheet or file name stands for (``meters``, ``2025-meters.csv`` …)."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0].strip().lower().replace("-", "_")
    stem = stem.replace(" ", "_")
    if stem in _ALIASES:
        return _ALIASES[stem]
    for alias in sorted(_ALIASES, key=len, reverse=True):
        if stem.endswith("_" + alias) or stem.startswith(alias + "_"):
            return _ALIASES[alias]
    return None
