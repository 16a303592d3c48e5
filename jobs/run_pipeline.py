"""spark-submit entry point for the whole refresh: ingest, features, segment, profile in order.

`spark-submit jobs/run_pipeline.py --conf conf/cluster.toml --as-of 2024-06-30 [--skip ingest]`
"""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
