#!/usr/bin/env bash
# The GPU path of codedyn measured in minutes: the Pythia-shaped study (benchmarks/pythia_shaped.py: random-weight
# pythia-14m-shaped checkpoints in a private HF cache, `codedyn run --preset pythia-14m` with reduced draws) on the
# first CUDA device, printing the time per unit, the share of it in model compute and the peak GPU memory.
#
#   benchmarks/device_check.sh [--check-160m] [--json out.json]     PYTHON=/path/to/python WORK=/tmp/dir
#
# Runs on any machine with an NVIDIA GPU and a CUDA build of torch; anywhere else it stops with one sentence.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  version="$("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not importable')"
  echo "device_check: no CUDA device is visible to torch ${version} under ${python}; run it on a machine with an" \
       "NVIDIA GPU and a CUDA build of torch (PYTHON=... selects the interpreter)" >&2
  exit 1
fi
"$python" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'device: {p.name}, '
f'{p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')"
cd "$root"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" benchmarks/pythia_shaped.py --device cuda \
  --work "${WORK:-/tmp/codedyn-device-check}" "$@"
