#!/usr/bin/env bash
# Regenerates the committed study results: both studies' `cpu` grids for every layer type, into
# experiments/results/<study>-cpu-<layer type>/ (records, REPORT.md, figures). Finished cells are kept,
# so running it again only fills in what is missing; delete a directory to redo it.
# Measured on a 2-core CPU: depth/correlation about 2 / 10 / 9 min (standard / quantized / spiking; the
# quantized records say 18 min because other jobs shared the CPU for part of it),
# trifecta (20,000 training images since 2026-12-01) see the "train s (unit)" column of
# experiments/results/trifecta-cpu-*/REPORT.md. Larger grids, not in this script (resumable; times measured
# on this CPU):
#   python -m ffhw.run study depth-correlation --grid full --layer-type standard   # 32x100 x 10 seeds, 100 epochs; 8x1000 x 3 seeds: ~3.2 h more
#   python -m ffhw.run study depth-correlation --grid width --layer-type standard  # 4x100 x 10 seeds (~46 min shared), 4x1000 x 3 seeds (~2.1 h alone, 2 threads)
#   python -m ffhw.run study depth-correlation --grid deep --layer-type quantized  # 32x100 x 5 seeds, 30 epochs (38 min on 1 thread)
#   python -m ffhw.run study depth-correlation --grid deep --layer-type spiking    # 32x100 x 5 seeds, 16 epochs (62 min on 1 thread)
#   python -m ffhw.run study trifecta --grid scale --layer-type standard           # the Trifecta variant at 1/4 width, 12 epochs
#   python -m ffhw.run study trifecta --grid long --layer-type standard            # the same for 30 epochs, 2 seeds (~85 min per cell, two 1-thread workers)
#   python -m ffhw.run study trifecta --grid long-no-augmentation --layer-type standard  # `long` without crop and rotation, 1 seed
#   python -m ffhw.run study trifecta --grid ablation --layer-type standard        # 5 variants x 2 data sets x 5 seeds, 15 epochs (~15-25 min per cell on 1 thread)
#   python -m ffhw.run study trifecta --grid ablation-30 --layer-type standard     # the same for 30 epochs (10-19 min per cell, two 1-thread workers; 8-bit about 30)
# A unit checkpoints each epoch into <study>/work/ (not committed): a unit longer than the machine stays up
# does not finish; finished cells are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
for study in depth-correlation trifecta; do
  for layer_type in standard quantized spiking; do
    python -m ffhw.run study "$study" --grid cpu --layer-type "$layer_type" --out experiments/results --quiet
  done
done
