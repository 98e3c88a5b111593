"""The command control plane: catalog, lifecycle, safety policy, dispatch and results.

A command request (API, CLI, billing, a service operation) is checked against the catalog
(:mod:`.catalog`, typed parameters in :mod:`.params`) and the device type's bindings
(:mod:`.capabilities`), judged by the safety policy (:mod:`devices.safety`), persisted with
its lifecycle (:mod:`.lifecycle`) and audited (:mod:`devices.audit`), then dispatched to the
FEP that holds the device's link.
"""

from devices.commands.catalog import CATALOG, CommandSpec, SafetyClass, command_spec
from devices.commands.lifecycle import CommandEvent, CommandState, next_state

__all__ = [
    "CATALOG",
    "CommandEvent",
    "CommandSpec",
    "CommandState",
    "SafetyClass",
    "command_spec",
    "next_state",
]
