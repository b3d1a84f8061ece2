#!/usr/bin/env bash
# Regenerate every committed report. Run from the repository root after `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m svdgrad sweep --resume          # reports/condition_sweep/
$PY -m svdgrad study hybrid            # reports/hybrid_protocol/
$PY -m svdgrad bench                   # reports/performance/
