"""RelayJob: a job that takes its results as the worker's bytes, unopened.

For the Dask engine's node (``robustpool._dask._node``): the process engine on a Dask
worker runs chunks for an owner elsewhere, and what a task returns must be unpickled there,
not in the Dask worker, so that a result whose unpickling crashes (or calls ``sys.exit``)
takes down nothing but the call that made it, in the owner, exactly as on one machine. The
dispatcher hands such a job each RESULT frame's payload as it came (``_io``), and unpickles
nothing of it; every other outcome (a death, a timeout) reaches it as usual, through
``fail``.
"""

from __future__ import annotations


class RelayJob:
    """A job (see ``robustpool._engine.Job``) that receives RESULT payloads unopened. A
    plain base class, not an ABC: the dispatcher tests every result against it, and
    ``isinstance`` of an ABC costs several times more."""

    def relay(self, index: int, count: int, status: int, body: bytes, spent: float) -> None:
        """Items ``index .. index+count-1`` arrived as one RESULT frame: ``status`` and
        ``body`` as ``_wire`` defines them (``_decode.load`` opens them), ``spent`` the
        seconds the worker measured. Called on the dispatcher thread; ``flush`` follows."""
        raise NotImplementedError
