#!/usr/bin/env bash
# The CI stress run: a fixed seed, the mixed profile, a 60 s budget (about 65-75 s in all:
# the last phase, the Ctrl-C'd owner subprocess and the final leak checks come on top).
# Exits non-zero on any broken invariant; the report's first line is the seed to replay.
# Usage: bash stress/ci.sh [extra args for python -m stress]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m stress --profile mixed --seconds "${STRESS_SECONDS:-60}" --seed "${STRESS_SEED:-1}" "$@"
