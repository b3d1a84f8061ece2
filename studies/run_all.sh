#!/usr/bin/env bash
# Regenerate every committed report. Run from the repository root after `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Each command regenerates its committed report; without --resume/--overwrite they would refuse
# to replace the finished results there (issue 8 §5).
$PY -m svdgrad sweep --resume          # reports/condition_sweep/ (adds only missing rows; --overwrite recomputes all)
$PY -m svdgrad study hybrid --resume   # reports/hybrid_protocol/ (finished runs are kept)
$PY -m svdgrad study landscape --resume  # reports/landscape/
if $PY -c "import elpv_dataset" 2>/dev/null; then  # the elpv extra: pip install -e '.[elpv]'
  $PY -m svdgrad study hybrid --dataset elpv --resume  # reports/hybrid_protocol_elpv/
fi
$PY -m svdgrad bench --overwrite       # reports/performance/ (timings are always measured again)
$PY studies/which_method.py            # README: the "Which method should I use?" block from the reports above
