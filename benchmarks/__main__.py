"""Entry point: ``python -m benchmarks [--repeats N] [--cases a,b] [--peers x,y] [--markdown FILE]``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
