#!/usr/bin/env bash
# How far rounding alone moves one seed's C1 value (issue 21, item 3; docs/PROTOCOL.md §4a).
#
# Pre-trains seed 0 of the cpu profile's hybrid three times — as the workbook does, and twice with a
# change that moves only rounding (the EMA target pass in fp32 instead of bf16; PyTorch, oneDNN and MKL
# capped to AVX2) — and its MLM baseline once, two runs at a time with one thread each (as
# train.parallel_runs: 2 does), then measures SST-2 mean-pooling geometry of the four encoders.
# Prints each hybrid's C1 value (hybrid − MLM uniformity) and their spread. ~35 min on 2 idle cores.
#
#   GLUE_DIR=... WIKI_DIR=... scripts/rounding_noise.sh [OUT]     (default OUT: outputs/rounding_noise)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/rounding_noise}
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
: "${GLUE_DIR:?set GLUE_DIR (SST-2 is evaluated)}" "${WIKI_DIR:?set WIKI_DIR (the cpu profile pre-trains on it)}"
mkdir -p "$OUT"
[ -f "$OUT/data/blocks_train.npy" ] || $PY -c "
from jepa_core.config import load_params
from jepa_core.data.blocks import prepare_data
p = load_params('parameters/cpu.yaml')
prepare_data(p.data, '$OUT/data', p.seed)"

run() {  # run NAME OBJECTIVE [ENV=VALUE ...] [-- --set KEY=VALUE ...]
  local name=$1 objective=$2; shift 2
  local envs=() sets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  [ $# -gt 0 ] && shift && sets=("$@")
  [ -f "$OUT/$name/model/config.json" ] && { echo "[rounding] $name: reused"; return; }
  env "${envs[@]}" $PY -m jepa_core.pretrain.train --params parameters/cpu.yaml --objective "$objective" --seed 0 \
    --data "$OUT/data" --out "$OUT/$name" --resume "${sets[@]}" > "$OUT/$name.log" 2>&1
  echo "[rounding] $name: $(tail -1 "$OUT/$name.log")"
}
AVX2=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)
run hybrid hybrid & run hybrid-fp32target hybrid -- --set jepa.target_precision=fp32 & wait
run hybrid-avx2 hybrid "${AVX2[@]}" & run mlm mlm & wait

$PY -m jepa_core.analysis.evaluate --params parameters/cpu.yaml --out "$OUT/eval" \
  --model mlm="$OUT/mlm/model" --model hybrid="$OUT/hybrid/model" \
  --model hybrid_fp32target="$OUT/hybrid-fp32target/model" --model hybrid_avx2="$OUT/hybrid-avx2/model" \
  --set 'eval.tasks=[sst2]' --set 'eval.poolings=[mean]' > "$OUT/eval.log" 2>&1
$PY - "$OUT" <<'PY'
import sys
import pandas as pd
out = sys.argv[1]
m = pd.read_csv(f"{out}/eval/results/metrics.csv")
m = m[(m.task == "sst2") & (m.pooling == "mean")]
table = m.pivot_table(index="model", columns="metric", values="value")
cols = [c for c in ("uniformity", "uniformity_centred", "mean_direction", "anisotropy", "accuracy") if c in table]
print(table[cols].round(4).to_string())
c1 = {k: table.loc[k, "uniformity"] - table.loc["mlm", "uniformity"] for k in table.index if k.startswith("hybrid")}
print("C1 (hybrid − MLM uniformity, SST-2, mean) per rounding variant:", {k: round(v, 4) for k, v in c1.items()})
print(f"range {max(c1.values()) - min(c1.values()):.4f}, sd {pd.Series(c1).std():.4f}")
PY
