#!/usr/bin/env bash
# The GPU check, in one go, on a machine without network that has torch, transformers, peft and
# accelerate (not trl, datasets, gguf, math-verify: carried as wheels). Budget: 8 minutes; each
# step has its own time limit, and a failed step does not stop the later ones.
#
#   WHEELS=dir/with/wheels S3FT_TEST_TOKENIZER=saved/tokenizer OUT=results/dir bash bench/gpu.sh
#
# WHEELS: the wheels the machine lacks (default: wheels/). S3FT_TEST_TOKENIZER: SmolLM2's tokenizer
# saved with save_pretrained (default: tokenizer/). OUT: where logs and JSON go (default: bench/results/gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu}"
WHEELS="${WHEELS:-wheels}"
export S3FT_TEST_TOKENIZER="${S3FT_TEST_TOKENIZER:-$PWD/tokenizer}"
export TMPDIR="${TMPDIR:-/tmp}"
DEPS="$TMPDIR/s3ft-gpu-deps"  # outside OUT: only results travel back
mkdir -p "$OUT" "$DEPS"
export PYTHONPATH="$PWD/src:$PWD/bench:$DEPS"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, report the status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/steps.txt"
  tail -n 5 "$OUT/$name.log"
}

: >"$OUT/steps.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__)" >>"$OUT/gpu.txt" 2>&1

step install 40 "$PY" -m pip install --no-index --no-deps --target "$DEPS" "$WHEELS"/*.whl
step test_cuda 90 "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider
# vLLM (the CUDA `vllm` wheel, where the machine has it): the backend's tests, then HF vs vLLM on the demo's
# prompts at bf16 (the figures users on a GPU get); skipped with a note where vLLM is missing.
if "$PY" -c "import vllm" 2>/dev/null; then
  step test_vllm 150 "$PY" -m pytest tests/test_vllm_backend.py -q -rs -p no:cacheprovider
  step engines_135m 120 "$PY" bench/engines.py --device cuda --dtypes bfloat16 --n 48 --threads 4 \
    --json "$OUT/engines_smollm2.json"
else
  echo "vllm: not installed here, its tests and bench skipped" | tee -a "$OUT/steps.txt"
fi
step train_speed_1.5b 100 "$PY" bench/train_speed.py --shape 1.5b --dtype bfloat16 --rows 48 --repeats 3 \
  --json "$OUT/train_speed_1.5b.json"
cat "$OUT/steps.txt"
