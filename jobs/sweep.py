"""``ray job submit -- python jobs/sweep.py CONFIG.yaml --out DIR``: an attack sweep on the cluster."""

from __future__ import annotations

import sys

from distrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
