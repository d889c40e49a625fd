#!/usr/bin/env bash
# One lent-GPU call per phase (each fits the device machine's 10-minute limit):
#
#   bash benchmarks/gpu_session.sh steps    # issue 3: step-time table, plain and chunked LSE
#   bash benchmarks/gpu_session.sh scale    # issue 6: 1M and 10M power-law graphs
#   bash benchmarks/gpu_session.sh wn18rr   # issue 3: WN18RR RotL-32 within 30 s of training
#
# Output goes under $OUT (default benchmarks/out/gpu): JSON lines, run folders, logs; the
# markdown tables are printed last. Paste measured rows into benchmarks/RESULTS.md with the
# device, jax version and commit that the JSON lines carry.
#
# Environment: HALE_DATA_DIR (datasets, for wn18rr), SIZES / MODELS / ENTITIES to narrow a
# phase (e.g. SIZES=tiny MODELS=RotL for a dry run on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
python -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$OUT/device.txt"
echo "commit $commit" | tee -a "$OUT/device.txt"

case "${1:-}" in
  steps)
    sizes="${SIZES:-wn18rr,fb15k237,codex_m,synth100k,synth1m}"
    models="${MODELS:-TransE,DistMult,RotatE,RotE,RotL}"
    for lse in plain chunked; do
      python benchmarks/step_time.py --sizes="$sizes" --models="$models" --lse="$lse" \
        --repeats=20 --warmup=3 --output="$OUT/steps.jsonl" 2>"$OUT/steps-$lse.err" \
        | tee "$OUT/steps-$lse.txt" | tail -n 14
    done
    for mm in tf32 bf16; do  # issue 3 item 4: reduced-precision distance matmuls
      python benchmarks/step_time.py --sizes="$sizes" --models=RotL --lse=chunked --matmul="$mm" \
        --repeats=20 --warmup=3 --output="$OUT/steps.jsonl" 2>"$OUT/steps-$mm.err" \
        | tee "$OUT/steps-$mm.txt" | tail -n 6
    done
    ;;
  scale)
    for n in $(echo "${ENTITIES:-1000000,10000000}" | tr ',' ' '); do
      python benchmarks/scale.py --entities="$n" --mesh=none --steps=50 \
        --output="$OUT/scale.jsonl" 2>"$OUT/scale-$n.err" | tee "$OUT/scale-$n.txt" | tail -n 3
    done
    ;;
  wn18rr)
    python -m hale_jax.launch --flagfile=launch/wn18rr.flags --max_seconds="${SECONDS_BUDGET:-30}" \
      --workdir="$OUT/wn18rr-30s" --overwrite 2>"$OUT/wn18rr.err" | tee "$OUT/wn18rr.txt" \
      | tail -n 8
    python benchmarks/summarize.py "$OUT/wn18rr-30s" --curve | tail -n 30
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh steps|scale|wn18rr" >&2
    exit 2
    ;;
esac
