#!/usr/bin/env bash
# The experiment tools end to end from the command line on real text (the stdlib corpus):
# prepare -> sweep -> fit -> report -> ensemble -> synthesize -> student (data mix + logit distillation) -> report.
# About 5 minutes on 2 CPU cores. Everything goes under benchmarks/out/e2e-science (override with OUT=...).
#   bash benchmarks/e2e_science.sh
set -euo pipefail
OUT=${OUT:-benchmarks/out/e2e-science}
PL=${PL:-pretrainlab}
mkdir -p "$OUT"
start=$(date +%s)

$PL prepare configs/prepare_stdlib.yaml output="$OUT/stdlib" tokenizer.vocab_size=4096 --no-progress
cat > "$OUT/sweep.yaml" <<YAML
name: wd-width
out_dir: $OUT/sweeps
base: $PWD/configs/tiny_test.yaml
overrides: {data.path: $OUT/stdlib, train.steps: 150, train.checkpoint_every: 75, eval.every: null,
            train.progress: false}
axes:
  - grid: {optim.weight_decay: [0.1, 1.0]}
  - list: [{model.d_model: 32, model.n_heads: 2}, {model.d_model: 64, model.n_heads: 4},
           {model.d_model: 96, model.n_heads: 4}, {model.d_model: 128, model.n_heads: 4}]
seeds: 2
jobs: 2
YAML
$PL sweep "$OUT/sweep.yaml" --dry-run
$PL sweep "$OUT/sweep.yaml"
$PL sweep "$OUT/sweep.yaml"          # again: every run is skipped
$PL fit "$OUT/sweeps/wd-width" --law power --x params --by optim.weight_decay --extrapolate 1e7
$PL report "$OUT/sweeps/wd-width"

mapfile -t runs < <(ls -d "$OUT"/sweeps/wd-width/runs/* | grep "d_model-128" | grep "weight_decay-1.0")
$PL ensemble "${runs[@]}" --out "$OUT/ensemble"
$PL synthesize "$OUT/ensemble" --tokens 100000 --out "$OUT/with-synthetic" --data "$OUT/stdlib" --overwrite
$PL train configs/tiny_test.yaml name=student out_dir="$OUT/runs" overwrite=true train.progress=false \
    data.path="$OUT/with-synthetic" 'data.weights={synthetic: 3, code: 1}' model.d_model=64 train.steps=150 \
    objective=distill teacher="$OUT/ensemble" objective_options.alpha=0.5 objective_options.temperature=2
$PL report "$OUT/runs/student"
echo "e2e science: $(( $(date +%s) - start )) s"
