"""spark-submit job for tests/test_cluster.py: where do the driver and the executors get custseg from?

`scripts/submit.sh --master spark://... tests/cluster_probe.py OUT.json [EXECUTORS]`

custseg's stages run only JVM code on executors (built-in functions, MLlib), so a pipeline run alone would
never start a Python worker and could not show what the executors import. This job does: it waits until
EXECUTORS executors have registered, runs Python tasks on all of them that import custseg, numpy and
pyarrow and call their native code, and writes what every task saw to OUT.json.
"""

from __future__ import annotations

import json
import os
import sys
import time

# like jobs/*.py: this folder off sys.path, so nothing here can shadow what the environment provides
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from pyspark.sql import SparkSession  # noqa: E402


def _where(rows):  # type: ignore[no-untyped-def]
    import numpy
    import pyarrow as pa
    import pyarrow.compute as pc

    import custseg

    values = list(rows)
    info = {
        "custseg": custseg.__file__,
        "python": sys.executable,
        "prefix": sys.prefix,
        "cwd": os.getcwd(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "numpy": numpy.__version__,
        "pyarrow": pa.__version__,
        # native code of both: a numpy sum and an Arrow compute kernel
        "sums": [int(numpy.asarray(values).sum()), pc.sum(pa.array(values, pa.int64())).as_py()],
        "pid": os.getpid(),
    }
    time.sleep(0.5)  # keep each task busy long enough for both executors to take some
    yield json.dumps(info)


def main(out: str, executors: int) -> None:
    spark = SparkSession.builder.appName("custseg-cluster-probe").getOrCreate()
    sc = spark.sparkContext
    deadline = time.time() + 120
    # registered block managers include the driver's
    while sc._jsc.sc().getExecutorMemoryStatus().size() < executors + 1 and time.time() < deadline:
        time.sleep(0.5)
    import custseg

    rows = sc.parallelize(range(32), 16).mapPartitions(_where).collect()
    result = {
        "driver": {"custseg": custseg.__file__, "python": sys.executable, "prefix": sys.prefix},
        "executors_registered": sc._jsc.sc().getExecutorMemoryStatus().size() - 1,
        "tasks": [json.loads(r) for r in rows],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
