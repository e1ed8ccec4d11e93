"""The process engine: a supervisor process that forks the workers, and the owner's side.

Kept empty on purpose: a supervisor started as a fresh interpreter imports
``robustpool._process._supervisor`` and should load only what it runs.
"""
