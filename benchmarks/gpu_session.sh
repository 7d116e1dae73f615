#!/usr/bin/env bash
# Every measurement that needs a CUDA GPU, in one run (BENCHMARKS.md, "CUDA" sections), from the repository root:
#   bash benchmarks/gpu_session.sh OUTDIR [COMFYUI_DIR]
# 1. python -m benchmarks on OpenUni-B-512 (bf16, 20 steps, every section: reference vs ours, repeat, load, peak VRAM
#    per memory setting, captioning, tiling), 2. tests/device_native_check.py in a ComfyUI checkout (KSampler vs
#    OpenUni Sampler on the GPU, partial loading, memory settings, fp16), 3. OpenUni-L-1024 (compare and VRAM) in
#    whatever time is left of BUDGET seconds. Each step has its own time limit and its own log, so one failing step
#    leaves the others' figures. COMFYUI_DIR: a ComfyUI checkout (default .comfy/ComfyUI, a copy you place there).
#    Packages the GPU machine lacks (diffusers, ComfyUI's torchsde, pydantic, ...) may be given as wheels in .whl/.
set -uo pipefail
OUT=${1:?give an output folder}
COMFY=${2:-.comfy/ComfyUI}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| diffusers', diffusers.__version__)"; } > "$OUT/machine.txt" 2>&1

timeout 300 python3 -m benchmarks --device cuda --variants B-512 --json "$OUT/b512.json" > "$OUT/b512.log" 2>&1
echo "b512 exit $? at ${SECONDS}s" >> "$OUT/machine.txt"

# ComfyUI's nodes.py imports PyAV at start-up; where it is missing, tests/device_stubs stands in (no video is used)
stubs=
python3 -c "import av" 2>/dev/null || stubs=$PWD/tests/device_stubs
PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$stubs COMFYUI_DIR=$COMFY timeout 120 \
  python3 tests/device_native_check.py "$OUT/native.json" > "$OUT/native.log" 2>&1
echo "native exit $? at ${SECONDS}s" >> "$OUT/machine.txt"

left=$((BUDGET - SECONDS))
if [ "$left" -gt 90 ]; then
  timeout "$left" python3 -m benchmarks --device cuda --variants L-1024 --only compare,cuda \
    --json "$OUT/l1024.json" > "$OUT/l1024.log" 2>&1
  echo "l1024 exit $? at ${SECONDS}s" >> "$OUT/machine.txt"
fi
