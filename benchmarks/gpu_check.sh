#!/usr/bin/env bash
# GPU check (issue #7): train ResNet50, MobileNetV2, DenseNet121 and EfficientNetB0 from scratch for a few
# epochs at 224 px on one GPU; print images/s and validation accuracy. One run, under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh [DATA_DIR] [extra gpu_check.py flags]   # DATA_DIR default ./device_data/Training
#   EPOCHS=3 BATCH=128 bash benchmarks/gpu_check.sh
#
# Writes everything it prints to $GPU_CHECK_LOG (default: $OUT/gpu_check_output.txt when $OUT is set, else
# benchmarks/gpu_check_output.txt; `make bench` copies that file into benchmarks/results.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DATA="${1:-./device_data/Training}"
shift || true
EPOCHS="${EPOCHS:-4}"
BATCH="${BATCH:-64}"
BUDGET="${BUDGET_SECONDS:-420}"       # gpu_check.py starts no architecture likely to end after this
HARD_LIMIT="${HARD_LIMIT_SECONDS:-440}"  # then a hard stop, so the whole script stays under 8 minutes
LOG="${GPU_CHECK_LOG:-${OUT:-$REPO/benchmarks}/gpu_check_output.txt}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # works without `pip install -e .`
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1

echo "== braintumor GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "data: $DATA; epochs: $EPOCHS; global batch: $BATCH; log: $LOG"

if [[ ! -d "$DATA" ]]; then
    echo "error: data folder $DATA does not exist; pass it as the first argument (one sub-folder per class)" >&2
    exit 2
fi

echo "== GPU (nvidia-smi)"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv
else
    echo "warning: nvidia-smi not found; asking TensorFlow instead"
fi

echo "== versions and the GPU as TensorFlow sees it"
"$PY" - <<'EOF'
import importlib.util
import sys

missing = [m for m in ("tensorflow", "keras", "yaml", "PIL", "sklearn", "pandas", "matplotlib", "imagehash")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"error: missing Python packages {missing}; install the project first: pip install -e .")
import keras
import tensorflow as tf

info = tf.sysconfig.get_build_info()
print(f"python {sys.version.split()[0]}, tensorflow {tf.__version__}, keras {keras.__version__}, "
      f"CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn_version')}")
gpus = tf.config.list_physical_devices("GPU")
print(f"GPUs visible to TensorFlow: {[g.name for g in gpus]}")
if not gpus:
    sys.exit("error: TensorFlow sees no GPU (check the driver, CUDA_VISIBLE_DEVICES and that the installed "
             "tensorflow has CUDA: pip install 'tensorflow[and-cuda]')")
EOF

echo "== training (from scratch, ${EPOCHS} epochs each)"
set +e
timeout --signal=INT --kill-after=20 "$HARD_LIMIT" "$PY" benchmarks/gpu_check.py --data "$DATA" \
    --epochs "$EPOCHS" --batch-size "$BATCH" --budget-seconds "$BUDGET" "$@"
status=$?
set -e
if [[ $status -eq 124 || $status -eq 130 ]]; then
    echo "error: stopped at the ${HARD_LIMIT}s hard limit; lower EPOCHS or pass --archs" >&2
fi
echo "== done (exit $status) in ${SECONDS}s"
exit "$status"
