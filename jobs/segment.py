"""spark-submit entry point: `spark-submit jobs/segment.py --conf conf/cluster.toml [--set k=v ...] [--as-of D]`."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
