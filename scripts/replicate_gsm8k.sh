#!/usr/bin/env bash
# The pre-registered GSM8K replication (docs/experiments/2026-12-07-gsm8k-replication-plan.md), seed by
# seed, every arm of a seed before the next seed. Each arm is a run directory; the variants reuse the
# seed's base-model artifacts (answers, paraphrases, base evaluation, the meter's probe answers), so only
# their training, evaluation and meter run. Killed at any point, started again, it resumes.
#   scripts/replicate_gsm8k.sh DATA_DIR [SEEDS]     e.g. scripts/replicate_gsm8k.sh ../shared/data "0 1 2"
set -euo pipefail
data_dir=${1:?usage: scripts/replicate_gsm8k.sh DATA_DIR [SEEDS]}
seeds=${2:-0 1 2}
config=configs/gsm8k-qwen05b-replication.yaml
root=${ROOT:-runs/gsm8k-qwen05b-replication}
replay=(--set train.replay.weight=1.0)
lr5x=(--set train.learning_rate=5.0e-4)

first=$root/seed${seeds%% *}
arm() {  # arm SEED DIR OVERRIDES...: one run directory, given the first seed's base-model artifacts
    local seed=$1 dir=$2; shift 2
    if [[ $dir != "$first" ]]; then
        python -c "import sys, pathlib; from s3ft.sweep import reuse_seed_independent as r; r(*map(pathlib.Path, sys.argv[1:]))" \
            "$first" "$dir"
    fi
    s3ft run "$config" --data-dir "$data_dir" -o "$dir" --set train.seed="$seed" "$@"
}

for seed in $seeds; do
    arm "$seed" "$root/seed$seed"
    arm "$seed" "$root/replay/seed$seed" --set 'methods=[s3ft]' --set variant=+replay "${replay[@]}"
    arm "$seed" "$root/lr5x/seed$seed" --set 'methods=[sft]' --set variant=+lr5x "${lr5x[@]}"
    arm "$seed" "$root/lr5x-replay/seed$seed" --set 'methods=[sft]' --set variant=+lr5x+replay "${lr5x[@]}" "${replay[@]}"
done
s3ft compare "$root"/seed* "$root"/{replay,lr5x,lr5x-replay}/seed* --no-general -o "$root/compare" \
    --contrast s3ft+replay-s3ft --contrast sft+lr5x+replay-sft+lr5x
