"""robustpool from asyncio: ``await`` on results and futures, ``async for`` over ``imap``,
``async with`` on both facades, ``loop.run_in_executor``, cancellation of awaiting tasks.

Plain ``asyncio.run`` inside sync tests (no pytest-asyncio), each run bounded; real worker
processes, no mocks. What workers run, and the owner's helpers, live in ``workers``.
"""
