"""The device ledger: what the utility owns, where it is, who pays for it, how it is read.

Tables (PostgreSQL schema ``ledger``, migrations ``devices/migrations/0100–0149``; natural
keys everywhere — every id is the utility's own text identifier and never changes):

Reference
    ``customer_types`` (residential, commercial, …), ``meter_sizes`` (G1.6…G25, DN15…DN50
    with Qmax/Qnom/Qmin in m³/h), ``device_transitions`` (the lifecycle graph).
Organisation and places
    ``org_units`` (governing relationships: company → branch → station → team);
    ``locations`` (region → area → building → unit, coordinates, governing ``org_unit_id``
    inherited downwards, ``path`` = ids from the region down, kept by trigger);
    ``supply_nodes`` (station → regulator → pressure zone/district → pipe, GeoJSON geometry).
Front end
    ``service_points`` (a protocol stack on a port / MQTT root) and ``fep_assignments``
    (which FEPs serve it, primary/standby).
Device catalog
    ``manufacturers``; ``device_types`` (kind meter/dtu/rtu/concentrator/collector, protocol
    and variant, frame and report template, command handler and variant, transport, wake
    mode, valve and arm-for-local-open support, read-back); ``vee_groups`` (YAML rule group).
Devices
    ``devices`` (type, protocol ``address``, lifecycle ``status`` in_stock → installed →
    active → removed with stamped times, collection network ``parent_device_id``/``path``
    (DTU → concentrator/RTU → collector → meter, enforced), ``link_id`` held, service point,
    location, IMEI/ICCID, desired ``parameters``); ``meters`` (meter attributes of a device
    of kind meter: medium, size/Qmax, register digits/decimals, unit, multiplier, valve,
    billing ``account_id``, tariff override, supply node, VEE group).
Customers and billing structure
    ``customers`` (**personal data**: name, phone, email, id number, postal address — the
    api and billing roles read it, analyst never); ``tariffs`` + ``tariff_versions``
    (effective-dated steps/TOU; a price adjustment adds a version); ``accounts`` (customer,
    premises location, billing mode, tariff, status, protected + reason, alarm1/alarm2,
    overdraft, max balance, reconnect limit, tier override).
Collection
    ``collection_plans`` (command + registers, interval or cron, local window, priority,
    retries) and ``collection_plan_targets`` (device, subtree, location, device type,
    service point, account, all).
Change tracking
    ``history`` (append-only; for an update only the changed columns; actor and reason from
    ``SET LOCAL unimeter.actor/unimeter.reason`` — see :func:`acting_as`) and ``outbox``
    (topic, entity, entity id — written by triggers in the writer's transaction, published
    by :mod:`devices.outbox`).

Views: ``device_context`` (a device with handler, effective link/service point, region, org
unit, account, protection — for dispatch, safety and authorisation), ``meter_dimensions``
(= ``LedgerMeter``), ``account_dimensions`` (= ``LedgerAccount``), ``collection_plan_devices``
(plans resolved to devices, for the FEPs); ``analyst.meters/accounts/locations/org_units/
supply_nodes/devices/tariff_versions`` without personal data.

Every entity table has ``created_at``, ``updated_at`` and ``row_version``; an UPDATE that
changes nothing leaves them, the history and the outbox untouched, so writers may upsert
freely. Writers act as the ``api`` role (the control plane).
"""

from __future__ import annotations

from devices.ledger.history import history_of
from devices.ledger.session import acting_as

__all__ = ["acting_as", "history_of"]
