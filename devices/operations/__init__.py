"""Service operations as resumable command sequences with compensation.

Register, transfer and deregister an account at a meter; install, replace and remove a
meter. :mod:`.definitions` holds the steps as data, :mod:`.ledger_actions` the ledger changes
with their undo records, :mod:`.engine` runs them (see its docstring).
"""

from devices.operations.definitions import OPERATIONS
from devices.operations.engine import OperationRecord, OperationService, StepRecord

__all__ = ["OPERATIONS", "OperationRecord", "OperationService", "StepRecord"]
