#!/usr/bin/env bash
# The NCCL path on a lent GPU host with no network (issue 14): one process vs a 1-rank torchrun sweep on the GPU,
# same cells and numbers, run.json's backend nccl. Wheels the host lacks come from .whl/, JPEGs from .bench_images/
# (else ../shared/data/imagenet-sample-1k or generated); results go to $OUT (and benchmarks/results/).
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ! python3 -c "import datasets" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
images=()
[ -d .bench_images ] && images=(--images .bench_images)
python3 benchmarks/bench_dist.py --nccl --model hiera_small_224 --res 224,256,288,320 --n-images 512 --repeats 1 \
    "${images[@]}" "$@" 2>&1 | tee "$OUT/dist-nccl.log"
exit "${PIPESTATUS[0]}"
