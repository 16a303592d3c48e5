"""spark-submit entry point: `spark-submit jobs/profile.py --conf conf/cluster.toml [--set k=v ...] [--as-of D]`."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["profile", *sys.argv[1:]]))
