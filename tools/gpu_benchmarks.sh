#!/usr/bin/env bash
# Issue 11's GPU checks and measurements in one batch (about 10-15 device minutes), for a CUDA
# machine without internet (the `device` tool runs it from the repository root):
#   bash tools/gpu_benchmarks.sh            # results into $OUT (the device tool's folder) or docs/results/gpu
# Missing Python packages are installed from ./.whl (wheels fetched beforehand on a machine with
# the package registry, e.g. `pip download pydantic --only-binary=:all: --python-version 3.12 -d .whl`).
set -euo pipefail
out=${OUT:-docs/results/gpu}
mkdir -p "$out"
python=${PYTHON:-python}
for module in pydantic yaml safetensors tqdm skimage torchmetrics transformers; do
    if ! "$python" -c "import $module" 2>/dev/null; then
        package=$module; [ "$module" = yaml ] && package=pyyaml; [ "$module" = skimage ] && package=scikit-image
        "$python" -m pip install -q --no-index --find-links .whl "$package" || echo "missing: $package"
    fi
done
"$python" -m pip install -q --no-deps --no-build-isolation -e . || "$python" -m pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

# 1. the CUDA tests (grouped_mm == dense reference, no host sync, AMP training) and the layer tests on the GPU machine
"$python" -m pytest -q -p no:cacheprovider tests/nn 2>&1 | tail -15 | tee "$out/gpu_tests.txt"

# 2. layer benchmark: bf16, D=384, E in {16, 128, 512}, k=4, 2 and 32 images of 240x240 (1,800 / 28,800 tokens)
for mode in forward train; do
    for tokens in 1800 28800; do
        "$python" -m mofme.benchmarks.layers --device cuda --dtype bf16 --mode "$mode" --tokens "$tokens" \
            --experts 16 128 512 --top-k 4 --mixtral --router-experts 0 --reference-max-experts 0 \
            --warmup 5 --repeats 20 --json "$out/layers_bf16_${mode}_${tokens}.json" | tail -14
    done
done | tee "$out/layers.txt"

# 3. whole restorer (paper preset): latency, memory and the training step under bf16 autocast
"$python" -m mofme.cli bench --device cuda --amp bf16 --preset paper --experts 16 128 512 --top-k 4 \
    --batch 2 --repeats 20 --train-repeats 10 --json "$out/bench_bf16_batch2.json" | tee "$out/bench.txt"
"$python" -m mofme.cli bench --device cuda --amp bf16 --preset paper --experts 128 --top-k 4 \
    --batch 32 --repeats 10 --train-repeats 5 --json "$out/bench_bf16_batch32.json" | tee -a "$out/bench.txt"

# 4. does the paper restorer's training step compile on the grouped_mm path? (graph breaks and their reasons)
"$python" -m mofme.benchmarks.compile --preset paper --device cuda --amp bf16 --batch 2 \
    --json "$out/compile_bf16.json" | tee "$out/compile.txt"
