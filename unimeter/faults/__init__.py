"""Fault tests: break the platform on purpose while a simulated fleet reports, then prove with
an oracle that nothing acknowledged was lost, nothing was stored twice, and consumption and
billing equal an independent recomputation from the simulator's log.

* :mod:`unimeter.faults.oracle` — the oracle (pure: log + stored rows -> verdict);
* :mod:`unimeter.faults.stored` — reads a run's stored rows from PostgreSQL;
* :mod:`unimeter.faults.ledger` — the accounts and tariffs a fault run bills with;
* :mod:`unimeter.faults.run` — the fault run itself (private services, supervised processes,
  scheduled kills and outages, report).
"""
