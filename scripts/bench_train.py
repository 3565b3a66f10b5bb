#!/usr/bin/env python
"""Training throughput: images/s and seconds per 100k images for one backbone (synthetic batches on the device).

    python scripts/bench_train.py --model efficientnet_lite0 --img-size 224 --batch-size 32 --device cpu --steps 5
    torchrun --standalone --nproc_per_node 8 scripts/bench_train.py --model efficientnetv2_b1 -b 512   # 8 GPUs

Same as ``dfdetect benchmark-train`` (every option is passed through); see docs/scale.md.
"""

from __future__ import annotations

import sys

import typer

from dfdetect.cli.benchmark_train import benchmark_train_cmd

if __name__ == "__main__":
    sys.exit(typer.run(benchmark_train_cmd))
