"""robustpool's stress suite: a seeded chaos runner and its invariants.

``python -m stress`` runs it (see ``stress/README.md``); :mod:`stress.faults` holds what the
workers run, :mod:`stress.runner` drives the pools, :mod:`stress.report` keeps the ledger
and prints the report; ``python -m stress.shm_noise`` plays another program's ``/dev/shm``
semaphores next to a run.
"""
