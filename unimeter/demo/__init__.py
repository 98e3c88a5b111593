"""The main job end to end (``unimeter demo``): a simulated fleet's ledger, the processes under
the supervisor, the simulator, and the summary and report of what the platform made of it."""
