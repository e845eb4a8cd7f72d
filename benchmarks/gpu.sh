#!/usr/bin/env bash
# The whole-audit table on CUDA: limit, xaudit (pass and whole run, with and without
# attribution.amp), the Captum script and monai.visualize, on the demo workload
# (benchmarks/audit_speed.py). Runs from a copy of the repository on a bare CUDA machine in
# under eight minutes; nothing is downloaded.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default OUT_DIR: $OUT, else benchmarks/results
#
# Needs a Python with a CUDA build of torch. If xaudit's other requirements (monai, captum,
# nibabel, ...) are missing it tries `pip install -e .` once (which needs a package index) and
# otherwise stops and names what is missing. The demo cohort is taken from ./sample_data
# (carry it along: `make sample` writes it, ~10 MB) or written with `xaudit sample-data`
# (which needs nilearn for the MNI template).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'EOF' || exit 2
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu.sh: no torch in this Python; set PYTHON to one with a CUDA build of torch")
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} sees no CUDA device; nothing to measure here")
print(f"gpu.sh: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
EOF

missing=$("$PY" -c "
import importlib.util as u
need = ['monai', 'captum', 'nibabel', 'typer', 'rich', 'yaml', 'sklearn', 'pydantic', 'scipy', 'skimage', 'matplotlib', 'PIL', 'psutil']
print(' '.join(n for n in need if u.find_spec(n) is None))")
if [ -n "$missing" ]; then
    echo "gpu.sh: missing $missing; trying pip install -e . (needs a package index)"
    "$PY" -m pip install --quiet -e . || { echo "gpu.sh: cannot install xaudit's requirements here: $missing"; exit 2; }
fi

"$PY" -m xaudit --help >/dev/null
start=$(date +%s)
# two rounds A B A B; each round: the script, xaudit, xaudit with amp, monai.visualize
timeout 450 "$PY" benchmarks/audit_speed.py --device cuda --repeats 2 --extra amp,monai \
    --workdir "$OUT_DIR/gpu_work" --out "$OUT_DIR/audit_speed_gpu.json" | tee "$OUT_DIR/audit_speed_gpu.txt"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee -a "$OUT_DIR/audit_speed_gpu.txt"
echo "gpu.sh: done in $(( $(date +%s) - start )) s; table in $OUT_DIR/audit_speed_gpu.txt"
rm -rf "$OUT_DIR/gpu_work"
