#!/usr/bin/env bash
# Device-machine phases (each fits the device machine's 10-minute limit):
#
#   bash benchmarks/gpu_phases.sh all      # the lot below, each phase time-boxed (~8 min)
#   bash benchmarks/gpu_phases.sh smoke    # a tiny step and a tiny launch: does it run at all?
#   bash benchmarks/gpu_phases.sh steps    # issue 3: step-time table, plain and chunked LSE
#   bash benchmarks/gpu_phases.sh scale    # issue 6: 1M (with a full epoch) and 10M graphs
#   bash benchmarks/gpu_phases.sh large    # large graphs: file to first step, 60 s budget, predict,
#     and a 1M-entity epoch cut by SIGTERM and SIGKILL against an uninterrupted one
#   bash benchmarks/gpu_phases.sh wn18rr   # issue 3: WN18RR RotL-32 within 30 s of training
#   bash benchmarks/gpu_phases.sh fb15k237 # FB15k-237 RotL-32 within 30 s (epoch time)
#   bash benchmarks/gpu_phases.sh probe    # WN18RR: the flagfile, batch 2048/4096, lambda 3 (~3 min)
#   bash benchmarks/gpu_phases.sh table2 hale [0.05]  # issue 4: Table 2's HaLE rows (~9 min on
#     an H200: more than one 505 s box, so run DATASETS=FB15k-237 (~6 min) and
#     DATASETS=WN18RR (~3.5 min) as two calls; a rerun reuses the finished cells)
#   bash benchmarks/gpu_phases.sh table3 hale [0.05]  # issue 4: Table 3's CoDEx-S/M HaLE rows
#   DATASETS=CoDEx-M bash benchmarks/gpu_phases.sh table3 hale [0.05]  # CoDEx-M only
#   bash benchmarks/gpu_phases.sh table5 hale,ha-allneg [0.05]  # issue 4: Table 5 cells
#   bash benchmarks/gpu_phases.sh fbgrid   # FB15k-237's short Table 2 rows: lambda / schedule / batch,
#     30 s a run (~8 min; GRID_MODELS, GRID_SETTINGS narrow it)
#   bash benchmarks/gpu_phases.sh fused    # issue 36: the Pallas kernel against chunked/plain LSE
#     (agreement at 100k entities, then timings at ENTITIES; ~3 min), then FB15k-237 RotL-32 with
#     --lse=fused against the default for 30 s each (accuracy within 0.002?)
#   bash benchmarks/gpu_phases.sh pack A   # logs, JSON and markdown of $OUT into archive A
#
# On the device machine, whose $OUT brings back at most 8 files of 16 MiB:
#   R=$OUT; OUT=/tmp/g timeout 505 bash benchmarks/gpu_phases.sh all; \
#     OUT=/tmp/g bash benchmarks/gpu_phases.sh pack $R/gpu.tgz
#
# Output goes under $OUT (default benchmarks/out/gpu): JSON lines, run folders, logs; the
# markdown tables are printed last. Add measured rows to benchmarks/records/results/*.json with the
# device, jax version and commit that the JSON lines carry (benchmarks/records/README.md), and
# a note in docs/notes/; then python -m benchmarks.make_results. The device machine gets no
# ../shared: copy the datasets into benchmarks/out/data (ignored) and `carry` that folder;
# HALE_DATA_DIR defaults to it when it exists.
#
# Environment: PYTHON (default python3), HALE_DATA_DIR, SIZES / MODELS / ENTITIES /
# SECONDS_BUDGET to narrow a phase (e.g. SIZES=tiny MODELS=RotL for a dry run on CPU);
# BOX sets a tableN phase's time box in seconds (default 560), so that several phases fit one call;
# DATASETS narrows a tableN phase (e.g. DATASETS=CoDEx-M for table3: CoDEx-S's HaLE rows
# already meet the paper at its full budget on the CPU, benchmarks/RESULTS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -z "${HALE_DATA_DIR:-}" && -d benchmarks/out/data ]]; then
  export HALE_DATA_DIR="$PWD/benchmarks/out/data"
fi
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
budget="${SECONDS_BUDGET:-30}"
ALL_SIZES=wn18rr,fb15k237,codex_m,synth100k,synth1m
STEP_ARGS=(--repeats=20 --warmup=3 --output="$OUT/steps.jsonl")
read -r -a ENTITY_LIST <<< "$(echo "${ENTITIES:-1000000,10000000}" | tr ',' ' ')"

# box SECONDS NAME CMD...: run CMD with a time limit, stderr to $OUT/NAME.err; never fatal.
box() {
  local limit="$1" name="$2"; shift 2
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>"$OUT/$name.err"
  local rc=$?
  echo "## $name: rc $rc in $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
  [[ $rc -eq 0 ]] || tail -n 5 "$OUT/$name.err"
  return $rc
}

smoke() {
  box 90 smoke-step "$PY" benchmarks/step_time.py --sizes=tiny --models=RotL --repeats=2 \
    --warmup=1 | tail -n 3 || return 1
  box 90 smoke-launch "$PY" -m hale_jax.launch --dataset=synthetic --max_epochs=2 \
    --max_seconds=0 --workdir="$OUT/smoke-run" --overwrite | tail -n 3 || return 1
}

steps_rotl() {  # steps_rotl LSE: RotL at every size
  box 90 "steps-rotl-$1" "$PY" benchmarks/step_time.py --sizes="${SIZES:-$ALL_SIZES}" \
    --models=RotL --lse="$1" "${STEP_ARGS[@]}" > "$OUT/steps-rotl-$1.txt"
}

steps_models() {  # the other models, chunked
  box 90 steps-models "$PY" benchmarks/step_time.py --sizes="${MODEL_SIZES:-wn18rr,fb15k237}" \
    --models="${MODELS:-TransE,DistMult,RotatE,RotE}" --lse=chunked "${STEP_ARGS[@]}" \
    > "$OUT/steps-models.txt"
}

steps_matmul() {  # issue 3 item 4: reduced-precision distance matmuls
  for mm in tf32 bf16; do
    box 60 "steps-$mm" "$PY" benchmarks/step_time.py --sizes="${MM_SIZES:-wn18rr,synth1m}" \
      --models=RotL --lse=chunked --matmul="$mm" "${STEP_ARGS[@]}" > "$OUT/steps-$mm.txt"
  done
}

table() {  # table MODULE JSONL: MODULE.markdown_table of the JSON lines (benchmarks/MODULE.py)
  [[ -f "$2" ]] || return 0
  "$PY" - "$1" "$2" <<'PYEOF'
import importlib, json, sys
sys.path.insert(0, "benchmarks")
rows = [json.loads(line) for line in open(sys.argv[2])]
print(importlib.import_module(sys.argv[1]).markdown_table(rows))
PYEOF
}

scale_one() {  # scale_one N [--full_epoch]
  local n="$1"; shift
  box "${SCALE_LIMIT:-150}" "scale-$n" "$PY" benchmarks/scale.py --entities="$n" --mesh=none \
    --steps=50 "$@" --output="$OUT/scale.jsonl" > "$OUT/scale-$n.txt"
}

run_dataset() {  # run_dataset NAME FLAGFILE LIMIT [extra flags]
  local name="$1" flagfile="$2" limit="$3"; shift 3
  box "$limit" "$name" "$PY" -m hale_jax.launch --flagfile="$flagfile" --max_seconds="$budget" \
    --workdir="$OUT/$name" --overwrite "$@" > "$OUT/$name.txt"
  tail -n 4 "$OUT/$name.txt"
  "$PY" benchmarks/summarize.py "$OUT/$name" --curve > "$OUT/$name-curve.md" 2>&1
  cat "$OUT/$name-curve.md"
}

if [[ "${1:-}" == pack ]]; then  # pack ARCHIVE: the logs, JSON and markdown under $OUT, without
  # parameters or checkpoints
  (cd "$OUT" && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.txt' \
      -o -name '*.md' -o -name '*.err' -o -name '*.log' \) -not -path '*/checkpoints/*' \
      -not -path '*/best/*' | tar -czf "$2" -T -) && ls -l "$2"
  exit
fi

"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$OUT/device.txt"
echo "commit $commit" | tee -a "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>/dev/null \
  | tee -a "$OUT/device.txt" || true

case "${1:-}" in
  smoke) smoke ;;
  steps) steps_rotl chunked; steps_rotl plain; steps_models; steps_matmul; table step_time "$OUT/steps.jsonl" ;;
  scale)
    scale_one "${ENTITY_LIST[0]}" --full_epoch
    for n in "${ENTITY_LIST[@]:1}"; do scale_one "$n"; done
    table scale "$OUT/scale.jsonl"
    ;;
  large)  # the large-graph benchmark on the GPU: 1M/5M and 2.5M/17M TSV files to the first step,
    # a 60 s budget end to end, predict of 100k queries (~8 min; LARGE_SIZES narrows it)
    box "${BOX:-560}" large "$PY" -m benchmarks.large_graph --sizes="${LARGE_SIZES:-1m,2.5m}" \
      --phases=first_step,budget,predict --root="$OUT/large" --output="$OUT/large.jsonl" \
      > "$OUT/large.txt"
    box "${BOX:-560}" large-equal "$PY" -m benchmarks.large_graph --sizes=1m-lite \
      --phases=resume_equal --root="$OUT/large" --output="$OUT/large.jsonl" >> "$OUT/large.txt"
    tail -n 6 "$OUT/large.txt" ;;
  wn18rr) run_dataset wn18rr launch/wn18rr.flags 150 ;;
  fb15k237) run_dataset fb15k237 launch/fb15k237.flags 150 ;;
  fused)
    box 300 fused_lse "$PY" -m benchmarks.fused_lse --entities="${ENTITIES:-1000000,10000000}" \
      > "$OUT/fused_lse.jsonl"
    run_dataset fb15k237-fused launch/fb15k237.flags 100 --lse=fused
    run_dataset fb15k237-auto launch/fb15k237.flags 100
    cat "$OUT/phases.txt"
    ;;
  probe)  # WN18RR's flagfile (lambda 2, batch 1024) against the larger batches and lambda 3 that
    # the 2-core CPU preferred at 600 s (benchmarks/RESULTS.md); 30 s each
    run_dataset wn18rr launch/wn18rr.flags 70
    run_dataset wn18rr-b2048 launch/wn18rr.flags 70 --batch_size=2048
    run_dataset wn18rr-b4096 launch/wn18rr.flags 70 --batch_size=4096
    run_dataset wn18rr-lam3 launch/wn18rr.flags 70 --lam=3
    cat "$OUT/phases.txt"
    ;;
  all)  # in order of priority, so that a cut-off run loses the least
    smoke || { echo "smoke failed: stopping"; exit 1; }
    run_dataset wn18rr launch/wn18rr.flags 100
    steps_rotl chunked
    scale_one "${ENTITY_LIST[0]}" --full_epoch
    run_dataset fb15k237 launch/fb15k237.flags 90
    steps_rotl plain
    steps_models
    for n in "${ENTITY_LIST[@]:1}"; do scale_one "$n"; done
    steps_matmul
    run_dataset wn18rr-lam0.3-b1024 launch/wn18rr.flags 80 --lam=0.3 --batch_size=1024
    table step_time "$OUT/steps.jsonl"
    table scale "$OUT/scale.jsonl"
    cat "$OUT/phases.txt"
    ;;
  fbgrid)  # FB15k-237's HaLE rows that miss the paper by > 0.01 on an H200 (docs/notes/2026-11-27-
    # h200-table2.md) had levelled off within 30 s, so the budget is not the gap. On CPU (300-epoch
    # probes, docs/notes/2026-11-27-fb15k237-lambda1-cosine.md) lambda 1.0 with the cosine schedule lifted
    # them above the H200's lambda-0.3 plateaus, and the flagfile now has both; this grid takes
    # one step from it on the GPU (constant rate, the old lambda 0.3, lambda 2, batch 2048).
    # One setting per run, 30 s each (~40 s a run on an H200 with compilation and evaluation).
    # GRID_SETTINGS: ';'-separated flag sets.
    read -r -a grid_models <<< "${GRID_MODELS:-RotL RotatE TransE}"
    IFS=';' read -r -a grid_settings <<< "${GRID_SETTINGS:---lr_schedule=constant;--lam=0.3;--lam=2.0;--batch_size=2048}"
    grid_dirs=()
    for setting in "${grid_settings[@]}"; do
      for model in "${grid_models[@]}"; do
        name="fb-$model-$(echo "$setting" | tr -c 'A-Za-z0-9.\n' '_' | tr -s '_' | sed 's/^_//;s/_$//')"
        # shellcheck disable=SC2086  # a setting is several flags
        box 75 "$name" "$PY" -m hale_jax.launch --flagfile=launch/fb15k237.flags --model="$model" \
          $setting --max_seconds="$budget" --workdir="$OUT/$name" --overwrite > "$OUT/$name.txt"
        tail -n 2 "$OUT/$name.txt"
        [[ -f "$OUT/$name/results.json" ]] && grid_dirs+=("$OUT/$name")
      done
    done
    [[ ${#grid_dirs[@]} -gt 0 ]] && "$PY" benchmarks/summarize.py "${grid_dirs[@]}" | tee "$OUT/fbgrid.md"
    ;;
  table2|table3|table5)  # tableN VARIANTS [SCALE]: issue 4's rows of one or more variants (hale |
    # samneg | a comma list; table5: hale,ha-samneg,...), budgets x SCALE (default 0.05: 30 s per
    # WN18RR cell, 15 s per CoDEx-S cell, 60 s per FB15k-237 or CoDEx-M cell; on an H200 a cell
    # took ~38 s (WN18RR) or ~70 s (FB15k-237) with start-up, compilation and evaluation). The
    # outdir is per experiment, so a rerun reuses finished cells.
    box "${BOX:-560}" "$1-$2" "$PY" benchmarks/reproduce.py --experiment="$1" --variants="$2" \
      --budget_scale="${3:-0.05}" --outdir="$OUT/$1" ${DATASETS:+--datasets="$DATASETS"} \
      > "$OUT/$1-$2.txt"
    tail -n 30 "$OUT/$1-$2.txt"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_phases.sh all|smoke|steps|scale|large|wn18rr|fb15k237|probe|fbgrid|table2|table3|table5|pack" >&2
    exit 2
    ;;
esac
