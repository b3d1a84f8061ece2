#!/usr/bin/env bash
# Regenerate every committed report. Run from the repository root after `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Each command regenerates its committed report; without --resume/--overwrite they would refuse
# to replace the finished results there (issue 8 §5).
$PY -m svdgrad sweep --resume          # reports/condition_sweep/ (adds only missing rows; --overwrite recomputes all)
# reports/hybrid_protocol/: the seed plan is kept in its study.json (only grows), so --resume alone
# completes it; the two plan commands below state it (finished runs are kept).
$PY -m svdgrad study hybrid --seeds 30 --jobs 2 --resume \
  --protocols ns,svd-ordinary,svd-pade,svd-exact,hybrid-ordinary,hybrid-pade,hybrid-exact
$PY -m svdgrad study hybrid --seeds 16 --protocols hybrid-exact-first --jobs 2 --resume
$PY -m svdgrad study landscape --resume  # reports/landscape/
if $PY -c "import elpv_dataset" 2>/dev/null; then  # the elpv extra: pip install -e '.[elpv]'
  # reports/hybrid_protocol_elpv/ (its plan, too, is in its study.json)
  $PY -m svdgrad study hybrid --dataset elpv --seeds 20 --jobs 2 --resume \
    --protocols gap,ns,svd-ordinary,svd-pade,svd-exact,hybrid-ordinary,hybrid-pade,hybrid-exact
  $PY -m svdgrad study hybrid --dataset elpv --seeds 26 --jobs 2 --resume \
    --protocols ns,svd-exact,hybrid-exact,svd-ordinary,hybrid-ordinary
fi
$PY -m svdgrad bench --overwrite       # reports/performance/ (timings are always measured again)
$PY studies/allocator_effect.py --overwrite  # reports/performance/allocator/ (glibc's thresholds default and held)
$PY studies/features_route_pooling.py  # prints the README's CovariancePooling route="features" numbers
$PY studies/which_method.py            # README: the "Which method should I use?" block from the reports above
