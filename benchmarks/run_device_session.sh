#!/usr/bin/env bash
# Everything the open issues still need from a lent GPU, in one call of at most 600 s (a session has 15 device
# minutes, the machine's start included): issue 14's NCCL check (one process vs a 1-rank torchrun sweep over NCCL),
# then issue 17's unmeasured parts in the time left: the compile cache filled (cold), the --decode device full sweep
# after the stream-drain fix with its data pipeline alone and the compiled floor it is judged against, then the PIL
# full sweep with the deeper prefetch. Each part writes its report to $OUT as it finishes; a failing part does not
# stop the next, and the suite skips the parts its budget cannot fit. Run from the repository root:
#     OUT=$OUT bash benchmarks/run_device_session.sh            (with .whl/ and .bench_images/ carried)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
DEADLINE_S=${DEADLINE_S:-570}   # inside the device call's 600 s, with room to copy $OUT back
mkdir -p "$OUT"
status=0
timeout 200 bash benchmarks/run_dist_nccl.sh || { echo "NCCL check failed (rc=$?)"; status=1; }
left=$((DEADLINE_S - SECONDS))
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
echo "GPU suite: $left s left"
timeout "$((left > 30 ? left - 10 : 20))" bash benchmarks/run_gpu_suite.sh \
    --parts cold,warm_device,data_device,floor,warm --n-cold 256 --tag "gpu-$gpu-open-parts" --budget-s "$((left > 60 ? left - 30 : 30))" \
    || { echo "GPU suite parts failed (rc=$?)"; status=1; }
exit "$status"
