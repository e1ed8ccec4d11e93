"""The "imap that never leaks" contract (docs/imap-cleanup.md).

``cleanup(result)`` runs exactly once, in the owner, for every result that was computed but
never handed to the consumer -- on ``close()``, leaving ``with``, garbage collection,
``terminate()`` or leaving the pool's ``with`` by an exception. Input is read lazily;
an input error surfaces at its position; inside a chunk only the failing (or killed) item
fails; cleanup errors never stop the other cleanups and are never silently dropped; Ctrl-C
in the owner leaves no process and no delivered file behind.

Real processes and signals, no mocks. Every wait is bounded. What workers run, and the
helpers several modules use, live in ``_support``.
"""
