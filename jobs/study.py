"""``ray job submit -- python jobs/study.py CONFIG.yaml --out URI``: a transferability study on the cluster."""

from __future__ import annotations

import sys

from distrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
