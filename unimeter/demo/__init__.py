"""The main job end to end (``unimeter demo``): a simulated fleet's ledger, the processes under
the supervisor, the simulator, and the summary and report of what the platform made of it."""

#: What goes wrong in the demo's fleet (rates per report, see simulator/faults.py): a few
#: meters skip a report, send a stray value or one below the last, or let their clocks run
#: away — for the VEE to catch, as the summary shows beside what was injected.
DEFAULT_FAULTS = "missing=0.003,spike=0.003,rollback=0.001,clock_drift=0.0005"
