"""Hardening regressions: each test pins down one behaviour the pool must have under abuse.

Every test here runs real processes, real signals and real files (no mock of robustpool),
bounds every wait, and fails fast when today's failure mode is a respawn loop or a hang:
helpers poll the outcome and stop as soon as a task has run more often, or more workers
have been replaced, than the behaviour allows. Tests that need a process of their own (the
owner killed, forked, interrupted or run with special flags) write a small owner script to
``tmp_path`` and run it with ``PYTHONPATH`` pointing at this checkout; they kill whatever
that script started, even on failure, because an owner killed with ``kill -9`` leaves its
processes outside this test's process tree, where the conftest check cannot see them.
Everything a worker runs, and the helpers several modules use, live in ``_support``. The
numbers in the section titles are the items of the hardening brief.
"""
