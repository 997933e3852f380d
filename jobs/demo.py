"""Entrypoint for ``ray job submit --working-dir . -- python jobs/demo.py``: the demo job on a cluster.

Inside a Ray job RAY_ADDRESS is set, so the job joins the cluster instead of starting a local Ray.
"""

import sys

from distrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
