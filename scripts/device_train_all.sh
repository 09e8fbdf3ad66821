#!/usr/bin/env bash
# Train the SR, MT (t1->flair, t1->t2) and clinical bundles from their shipped weights on the GPU machine, in
# one call of the device tool, time-boxed; weights (fp16), logs, figures and summary.json land in $OUT.
#
# Before the call, here:   .venv/bin/python scripts/pack_device_payload.py --slim   (builds the ignored .device/)
#                          bash scripts/device_slim.sh on     (the ~130 MiB of shipped weights stay here)
# After it:                bash scripts/device_slim.sh off
# The call (device tool `run`; 8 minutes of training and packing inside a 570 s limit):
#   command:   bash scripts/device_train_all.sh --minutes 8
#   carry:     [".device"]
#   timeout_s: 570
# SR alone, with every training subject (session 35): pack with `--slim --only sr --slab 64`, run with `--only sr`.
# SR alone, slices like the benchmark's whole volumes, exact start weights (session 36): pack with `--slim --only sr
#   --slab 72 --val-slab 36 --spread --full-plane --init-bits 16` (add `--start sr=W.pt` to continue a returned
#   file: the mtsr_sr_model.pt.part* joined), run with `--only sr`.
# Two SR recipes in one call: pack with `--only sr,sr_b`, run with `--only sr,sr_b --sr-b-args '...'`.
# Rehearsal on a CPU, in a venv holding only the GPU image's packages (see docs/sr.md, "Training on a GPU"):
#   .venv/bin/python scripts/device_train.py gpu-image-venv /tmp/gpu-image-venv
#   OUT=/tmp/devout PYTHON=/tmp/gpu-image-venv/bin/python bash scripts/device_train_all.sh --minutes 3 --cpu-smoke
#
# Steps: install the payload's wheels into $MTSR_DEVICE_SITE (default /tmp/site) with pip, offline, no
# dependencies; then scripts/device_train.py with PYTHONPATH = repository, scripts/, site (nothing else).
# Every other argument goes to scripts/device_train.py (--help lists them: --sequential, --only, --sr-args...).
set -u
started=$(date +%s.%N)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
payload=${MTSR_DEVICE_PAYLOAD:-$repo/.device}
site=${MTSR_DEVICE_SITE:-/tmp/site}
python=${PYTHON:-python3}
: "${OUT:?OUT must name the folder whose files come back}"
mkdir -p "$OUT"

if ! ls "$payload"/wheels/*.whl > /dev/null 2>&1 || [ ! -f "$payload/data/subjects.json" ]; then
    echo "no payload in $payload: run scripts/pack_device_payload.py here and carry .device" >&2
    exit 2
fi
install_log=$(mktemp)
if ! "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$payload"/wheels/*.whl > "$install_log" 2>&1; then
    cat "$install_log" >&2
    exit 3
fi
echo "wheels installed in $site in $(awk "BEGIN {print $(date +%s.%N) - $started}") s"

export PYTHONPATH="$repo:$repo/scripts:$site"
# a --slim payload: the shipped weights stayed behind; their 8-bit copies go back to their own paths
if [ -d "$payload/init" ]; then
    "$python" "$repo/scripts/device_weights.py" unpack "$payload/init" || exit 4
fi
export PYTHONUNBUFFERED=1
exec "$python" "$repo/scripts/device_train.py" --started-at "$started" --out "$OUT" --payload "$payload" "$@"
