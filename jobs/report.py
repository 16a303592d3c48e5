"""spark-submit entry point: `spark-submit jobs/report.py --conf conf/cluster.toml [--set k=v ...] [--as-of D]`."""

import os
import sys

# Python puts this folder first on sys.path, where jobs/profile.py would shadow the standard library's
# `profile` module (which pyspark imports): take it off before importing anything else.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from custseg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
