#!/usr/bin/env bash
# GPU checks, run by hand on a CUDA machine (nothing in CI depends on them); about 3-5 min.
#
#   1. bf16 meta-training, 20 outer steps (FOMAML, 5-way 5-shot, 5 inner steps) on the
#      embedded Gemma 3 270M, launched through accelerate with the multi-GPU config and
#      one process: seconds per episode (median of steps 3-20) and peak GPU memory;
#   2. the embedded Gemma loaded 4-bit through bitsandbytes on CUDA: option scores and a
#      short generation, seconds and peak GPU memory.
#
# Usage: eval/gpu_check.sh [OUT]   (default OUT: /tmp/ecgqa-gpu-check; PY=python to override
# the interpreter, default .venv/bin/python). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-/tmp/ecgqa-gpu-check}
mkdir -p "$OUT"
export WANDB_MODE=offline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: eval/gpu_check.sh needs a GPU"
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
EOF

# Peak GPU memory of a whole process tree (accelerate launches a child): poll nvidia-smi.
watch_memory() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$1" &
  echo $!
}
peak_of() { sort -n "$1" | tail -1; }

echo "== 1. bf16 meta-training, 20 outer steps, accelerate multi-GPU config, 1 process"
[ -d "$OUT/synth" ] || "$PY" -m ecgqa data synth --out "$OUT/synth" --n-ecgs 400 --seed 0 --quiet
rm -rf "$OUT/meta"
base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
watcher=$(watch_memory "$OUT/mem-meta.log")
start=$(date +%s)
"$PY" -m accelerate.commands.launch --config_file configs/accelerate/multi-gpu.yaml \
  --num_processes 1 ecgqa/train_meta.py --config configs/meta/default.yaml --report-to none \
  data.qa="$OUT/synth" data.synth_n_ecgs=0 model.llm.dtype=bfloat16 train.steps=20 \
  train.save_every=20 train.eval_every=0 train.test_episodes=0 train.out="$OUT/meta" \
  > "$OUT/meta.log" 2>&1 || { kill "$watcher"; tail -20 "$OUT/meta.log"; exit 1; }
kill "$watcher"
"$PY" - "$OUT/meta" "$(( $(date +%s) - start ))" <<'EOF'
import json, statistics, sys
from pathlib import Path
state = sorted(Path(sys.argv[1], "checkpoints").glob("*/state.json"))[-1]
steps = json.loads(state.read_text())["history"]
sec = [h["sec_per_episode"] for h in steps[2:]]
print(f"meta-training: {len(steps)} outer steps, median {statistics.median(sec):.2f} s/episode "
      f"(steps 3-{len(steps)}), last query loss {steps[-1]['query_loss']:.3f}, "
      f"{sys.argv[2]} s wall including model load")
EOF
echo "peak GPU memory (meta-training): $(( $(peak_of "$OUT/mem-meta.log") - base )) MiB above the idle $base MiB"

echo "== 2. the embedded Gemma in 4-bit (bitsandbytes) on CUDA"
"$PY" - <<'EOF'
import time
import torch
from ecgqa.models.llm import LlmConfig, load_llm

torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
model, tok = load_llm(LlmConfig(source="embedded", quantization="4bit", dtype="bfloat16"))
load_s = time.perf_counter() - t0
device = next(model.parameters()).device
prompt = "Question: Does this ECG show atrial fibrillation? Answer:"
ids = tok(prompt, return_tensors="pt").input_ids.to(device)
t0 = time.perf_counter()
with torch.no_grad():
    logits = model(ids).logits[0, -1].float()
    yes, no = (tok(w, add_special_tokens=False).input_ids[0] for w in (" yes", " no"))
    p = torch.softmax(logits[[yes, no]], 0)
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
torch.cuda.synchronize()
print(f"4-bit LLM on {device}: loaded in {load_s:.1f} s, P(yes)={p[0]:.3f} P(no)={p[1]:.3f}, "
      f"generated {tok.decode(out[0, ids.shape[1]:])!r} in {time.perf_counter() - t0:.2f} s, "
      f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated")
assert device.type == "cuda" and torch.isfinite(logits).all()
EOF
echo "gpu_check: all checks passed"
