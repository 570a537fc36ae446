#!/usr/bin/env bash
# The GPU check, one command on a machine with one CUDA GPU (no network needed), from the repository
# root, after scripts/gpu_prepare.sh filled .gpu/ (wheels + data) or with the packages installed and
# WIKI_DIR / GLUE_DIR set. Stages (each timed; the first failure stops the script):
#   1. install the carried wheels   2. the smoke profile through the workbook on the GPU (fail fast)
#   3. the gpu profile end to end through the workbook runner   4. the benchmark at the paper's size
#   (the profile's architecture), batch 32 and 256 (MFU)   5. copy the bench JSON, summary.md, CSVs
#   and figures to $OUT   6. (COMPILE_BENCH=1) the benchmark again under torch.compile, the hybrid steps with
#   and without train.static_shapes side by side (hybrid_static_vs_hybrid_step_time in the JSON)
# Optional: GPU_BENCH_BATCHES (default "32 256"), GPU_PROFILE_TIMEOUT (s, default 480), GPU_PROFILE_ARGS (extra
# workbook arguments, e.g. "--set train.steps=100"), SMOKE=0 (skip stage 2), COMPILE_BENCH=1 (also
# time the steps under torch.compile, last), GPU_BENCH_ARGS (extra bench arguments), INSTALL_WHEELS=0
# (use the environment's packages), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/outputs/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
# (tokenizers keeps its threads: tokenising the corpus on every core is most of the data step)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HOME=${HF_HOME:-$(mktemp -d)} MPLCONFIGDIR=${MPLCONFIGDIR:-$(mktemp -d)}
PY=${PYTHON:-python3}
RUNS=${RUNS:-/tmp/gpu_outputs}
stage() { echo "=== [$(date +%T), ${SECONDS}s] $*"; }

stage "1. packages"
if [ "${INSTALL_WHEELS:-1}" = 1 ] && compgen -G ".gpu/whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD JUPYTER_PATH=/tmp/site/share/jupyter  # nbconvert's HTML templates
else
  export PYTHONPATH=$PWD
fi
[ -d .gpu/data/wikipedia ] && export WIKI_DIR=${WIKI_DIR:-$PWD/.gpu/data/wikipedia}
[ -d .gpu/data/glue_data ] && export GLUE_DIR=${GLUE_DIR:-$PWD/.gpu/data/glue_data}
: "${WIKI_DIR:?no WIKI_DIR and no .gpu/data/wikipedia}" "${GLUE_DIR:?no GLUE_DIR and no .gpu/data/glue_data}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
$PY -c "import torch, transformers, tokenizers, papermill, nbconvert; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU', '| transformers', transformers.__version__, '| tokenizers', \
tokenizers.__version__, '| papermill', papermill.__version__, '| nbconvert', nbconvert.__version__)"

if [ "${SMOKE:-1}" = 1 ]; then
  stage "2. smoke profile on the GPU"
  $PY -m jepa_core.study.workbook run parameters/smoke.yaml --outputs "$RUNS" --no-html
fi

stage "3. gpu profile"
status=0
# shellcheck disable=SC2086  # GPU_PROFILE_ARGS is a list of arguments
timeout "${GPU_PROFILE_TIMEOUT:-480}" $PY -m jepa_core.study.workbook run parameters/gpu.yaml --outputs "$RUNS" \
  ${GPU_PROFILE_ARGS:-} || status=$?
stage "gpu profile exit status $status"
# A timed-out run leaves its evaluation workers (spawned processes) finishing their unit: stop them
# so that they do not load the machine while the benchmark runs.
pkill -f 'multiprocessing.spawn import spawn_main' 2>/dev/null || true

stage "4. benchmark, paper size (the gpu profile's architecture)"
read -r arch dropout < <($PY -c "from jepa_core.config import load_params
m = load_params('parameters/gpu.yaml').model; print(m.architecture, m.dropout)")
paper=(--architecture "$arch" --dropout "$dropout" --layers 6 --hidden 512 --heads 8 --ffn 2048 --predictor-layers 6
       --predictor-hidden 192 --predictor-heads 6 --vocab 30522 --documents 200 --quiet)
for batch in ${GPU_BENCH_BATCHES:-32 256}; do
  # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of arguments
  $PY -m jepa_core.bench "${paper[@]}" --batch "$batch" ${GPU_BENCH_ARGS:-} --out "$OUT/bench_${arch}_b$batch.json" \
    || status=$?
done

stage "5. results"
run="$RUNS/gpu"
[ -f "$run/summary.md" ] && cp "$run/summary.md" "$OUT/"
# what docs/results/gpu/ keeps (a few MB): no weights, checkpoints, caches, embeddings or predictions
tar -czf "$OUT/gpu_results.tar.gz" -C "$run" --exclude='checkpoints' --exclude='*.safetensors' \
  --exclude='cache' --exclude='data' --exclude='.kernels' --exclude='embeddings' --exclude='*.parquet' \
  --exclude='*.npy' . 2>/dev/null || true
ls -la "$OUT"

if [ "${COMPILE_BENCH:-0}" = 1 ]; then  # last: its compile time is the least predictable
  stage "6. benchmark with torch.compile, with and without static shapes"
  $PY -m jepa_core.bench "${paper[@]}" --batch 256 --rounds 5 --compile --static-shapes \
    --out "$OUT/bench_${arch}_compile.json" || true
fi
stage "done"
exit $status
