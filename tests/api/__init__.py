"""The API conformance suite: the ``multiprocessing.Pool`` API and robustpool's documented
differences, run on every facade x engine cell (see ``conftest.py``)."""
