#!/usr/bin/env bash
# The paper grids of both studies for all three layer types, on GPUs, into experiments/results/<study>-paper-<type>/.
#
# Estimated GPU hours (NOT measured: no GPU has run these yet). From `python benchmarks/gpu_estimate.py`
# (benchmarks/results/gpu_estimate.json): the real training step and evaluation batch of every work unit are
# counted on torch's meta device (kernels, FLOPs, bytes moved), then timed on an H200 model (fp32 67 TFLOPS
# and 4.8 TB/s at 50% efficiency, 8 us per eager kernel launch). Replace them with measured epoch times once
# `python benchmarks/train_bench.py --sections device --device cuda` has run on the GPU.
#
#   depth-correlation  standard    4.3 h   (launch-bound: 100-unit layers are tiny kernels)
#   depth-correlation  quantized  12.1 h
#   depth-correlation  spiking    18.1 h   (the T-step loop on 1000-unit layers: memory-bound)
#   trifecta           standard    8.7 h   (FLOP-bound convolutions)
#   trifecta           quantized   9.1 h
#   trifecta           spiking    67.0 h   (T = 4 steps of every block)
#   total                        ~119 GPU hours
#
# Spread over several GPUs with Ray (pip install 'ffhw[ray]' on every node):
#   ray start --head --num-gpus 8                    # on the head node
#   ray start --address HEAD_IP:6379 --num-gpus 8    # on every other node
#   GPUS_PER_CELL=0.25 RAY_ADDRESS=auto bash experiments/run_gpu_studies.sh
# Work units (a cell and its batched seeds) are independent, so n GPUs finish in about 1/n of the time; the
# depth study's 100-unit cells leave a GPU mostly idle, so pack several per GPU (GPUS_PER_CELL=0.25), and give
# the Trifecta's conv cells a whole one (GPUS_PER_CELL=1). Finished cells are recorded in the study directory:
# running the script again only runs what is missing. With RAY_STORAGE=shared (a filesystem mounted at the
# same path on every node) an interrupted unit continues from its epoch checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
ray_args=()
if [ -n "${RAY_ADDRESS:-}" ]; then
  ray_args=(--executor ray --ray-address "$RAY_ADDRESS" --gpus-per-cell "${GPUS_PER_CELL:-0.25}"
            --ray-storage "${RAY_STORAGE:-driver}")
fi
for study in depth-correlation trifecta; do
  for layer_type in standard quantized spiking; do
    python -m ffhw.run study "$study" --grid paper --layer-type "$layer_type" --out experiments/results \
      --set train.device=cuda "${ray_args[@]}" --quiet
  done
done
