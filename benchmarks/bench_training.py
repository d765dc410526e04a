"""The `stitchlab bench` table: training speed against this machine's matrix-product peak.

    PYTHONPATH=src python benchmarks/bench_training.py --out bench.json
"""

from __future__ import annotations

import sys

from stitchlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
