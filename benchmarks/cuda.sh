#!/usr/bin/env bash
# On a host with a CUDA GPU: the CUDA tests, then the GPU benchmarks, into one folder.
#
#   benchmarks/cuda.sh OUT [STAGE...]     stages: tests attention floor fidelity (default: all)
#
# Each stage runs under its own time limit (seconds, overridable as <STAGE>_SECONDS) and is
# interrupted with SIGINT, so pytest still prints what failed; a stage that fails or runs out of
# time does not stop the next. Writes OUT/gpu.txt, OUT/cuda_tests.log, attention_<gpu>.{json,png},
# floor_<gpu>.{json,md} and OUT/fidelity/fidelity.json.
set -u
out=${1:?usage: benchmarks/cuda.sh OUT [STAGE...]}
shift
stages=${*:-tests attention floor fidelity}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_FX_GRAPH_CACHE=1

limited() {  # limited SECONDS COMMAND...: run COMMAND, interrupted after SECONDS
    local seconds=$1
    shift
    local started=$SECONDS
    timeout -s INT -k 15 "$seconds" "$@"
    echo "== rc=$? after $((SECONDS - started)) s: $*"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' \
    | tee -a "$out/gpu.txt"

for stage in $stages; do
    case $stage in
    tests)
        limited "${TESTS_SECONDS:-140}" python3 -m pytest -m cuda -q -n 8 -p no:cacheprovider \
            --timeout 150 --tb=short -rfE tests/sparse_core tests/models >"$out/cuda_tests.log" 2>&1
        tail -40 "$out/cuda_tests.log"
        ;;
    attention)
        limited "${ATTENTION_SECONDS:-120}" python3 -m benchmarks.attention --device cuda \
            --sizes 4096 16384 65536 --dtypes bfloat16 --reps 10 --case-seconds 5 \
            --quadratic-max-n 16384 --output "$out"
        ;;
    floor)
        limited "${FLOOR_SECONDS:-50}" python3 -m benchmarks.floor --device cuda \
            --sizes 8192 32768 --dtypes bfloat16 --reps 5 --dense-max-n 32768 \
            --omp-wait-policy inherit --output "$out"
        ;;
    fidelity)
        limited "${FIDELITY_SECONDS:-160}" python3 -m benchmarks.fidelity --device cuda \
            --lengths 8192 --out "$out/fidelity"
        ;;
    *) echo "unknown stage $stage" >&2 ;;
    esac
done
