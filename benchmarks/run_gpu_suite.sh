#!/usr/bin/env bash
# The GPU suite on a lent GPU host with no network (benchmarks/README.md, "Running the GPU suite"):
# wheels the host lacks come from .whl/, real JPEGs from .bench_images/, results and logs go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-benchmarks/results}
WORK=${WORK:-/tmp/gpu-suite}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cpus: $(nproc)"; df -h /dev/shm | tail -1
if ! python3 -c "import datasets" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, timm, pyarrow, datasets, typer, rich; print('torch', torch.__version__, 'timm', timm.__version__, 'pyarrow', pyarrow.__version__, 'datasets', datasets.__version__)" || exit 1
python3 benchmarks/gpu_suite.py --images .bench_images --work "$WORK" "$@" 2>&1 | tee "$OUT/gpu-suite.log"
rc=${PIPESTATUS[0]}
for f in "$WORK"/sweep_*.log; do [ -f "$f" ] && tail -c 200000 "$f" > "$OUT/$(basename "$f")"; done
exit "$rc"
