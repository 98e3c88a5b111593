"""Command profiles of typical device types, shared by the control-plane tests."""

from __future__ import annotations

from devices.commands.capabilities import CommandBinding, DeviceTypeCommands

_METER_READS = ("read_now", "read_history", "sync_time")


def gas_meter_armable() -> DeviceTypeCommands:
    """An NB-IoT prepaid gas meter whose valve can be armed for opening at the meter."""
    names = (*_METER_READS, "valve_close", "valve_arm_open", "valve_open", "set_price",
             "top_up", "set_balance", "set_report_interval")
    return DeviceTypeCommands.build("gas_nbiot_g4", "cjt188",
                                    [CommandBinding(n, "cjt188") for n in names],
                                    valve_arming=True, delivery="on_wake")


def gas_meter_direct() -> DeviceTypeCommands:
    """A wired gas meter whose valve opens only directly (no arming)."""
    names = (*_METER_READS, "valve_close", "valve_open", "set_price", "set_balance")
    return DeviceTypeCommands.build("gas_wired_g2_5", "cjt188",
                                    [CommandBinding(n, "cjt188:valve_vendor_a") for n in names])


def electricity_meter() -> DeviceTypeCommands:
    names = (*_METER_READS, "relay_trip", "relay_close", "top_up", "set_balance")
    return DeviceTypeCommands.build("elec_dlt645", "dlt645",
                                    [CommandBinding(n, "dlt645") for n in names])


def water_meter_read_only() -> DeviceTypeCommands:
    return DeviceTypeCommands.build("water_cjt188", "cjt188",
                                    [CommandBinding("read_now", "cjt188", readback=False)])
