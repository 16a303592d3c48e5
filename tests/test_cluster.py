"""On a real Spark cluster: spark-submit (scripts/submit.sh) to a standalone master with two workers
(scripts/local_cluster.sh), the packaged environment (scripts/package.sh), a lost worker and a killed driver.

Cluster-like conditions: the master, the workers and the submitted drivers run with a minimal environment
(no PYTHONPATH, no virtualenv); executors are separate JVMs that run Python from the shipped archive
(./environment), and the driver runs the environment that was packed (build/cluster-env), so custseg comes
from the built wheel, never from lib/. `tests/cluster_probe.py` shows where each side imported it from.

Every process these tests start (master, workers, their executors, submitted drivers) is stopped by its
process id in the `cluster` fixture's teardown, even when a test fails; the teardown then fails if any of
them is still alive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from pyspark.sql import functions as F

from conftest import SMALL_JVM
from custseg import pipeline, runner
from custseg.core import columns as C
from custseg.core import config
from custseg.io import delta as tables
from custseg.sample import step as sample

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
AS_OF = dt.date(2024, 12, 31)
EXECUTOR_MEMORY = "1g"
# relative tolerance for doubles computed by sums whose order depends on partitioning and shuffle-fetch
# order; the absolute floor covers values that are differences cancelling to ~0 (the 'other' spend share
# of a customer whose spend is all in the top categories comes out as 0 or as 1e-16, by summation order)
REL_TOL, ABS_TOL = 1e-9, 1e-12

GENERATED_COLUMNS = [
    "input.columns.customer_id=CustomerID", "input.columns.timestamp=InvoiceDate",
    "input.columns.quantity=Quantity", "input.columns.unit_price=UnitPrice",
    "input.columns.transaction_id=InvoiceNo", "input.columns.category=Category",
    "input.columns.channel=Channel", "input.columns.country=Country",
]


# --- processes ------------------------------------------------------------------------------------

def _clean_env(**extra: str) -> dict[str, str]:
    """What a cluster node or a fresh shell has: no PYTHONPATH, no virtualenv, no PYSPARK_* of this process."""
    java = shutil.which("java")
    path = ":".join(dict.fromkeys([*([os.path.dirname(java)] if java else []), "/usr/local/bin", "/usr/bin", "/bin"]))
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "TZ": "UTC"}
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    env.update(extra)
    return env


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _descendants(pid: int) -> list[int]:
    out = []
    for c in _children(pid):
        out += [c, *_descendants(c)]
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (Path("/proc") / str(pid) / "stat")
    try:
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _free_port_base(n: int) -> int:
    """A base port b with b .. b+n-1 all free on 127.0.0.1 (the cluster's ports, unless set in the env)."""
    for _ in range(100):
        base = random.randint(20000, 40000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.load(r)


@dataclass
class Submission:
    """One spark-submit, in its own process group (so its driver JVM and Python die together)."""

    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.seconds = round(time.perf_counter() - self.started, 1)
        return rc

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def log(self) -> str:
        """custseg's log: the driver's Python writes it to stderr, which spark-submit passes on as its stdout."""
        return self.stdout() + self.stderr()

    def tail(self, n: int = 40) -> str:
        lines = [ln for ln in self.stderr().splitlines() if not ln.startswith("\tat ")]
        return "\n".join(lines[-n:]) + "\n--- stdout ---\n" + self.stdout()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]
    master_port: int
    master_ui_port: int
    worker_port: int
    submissions: list[Submission] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def script(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / "scripts" / "local_cluster.sh"), action], env=self.env, capture_output=True,
                              text=True, timeout=300)

    def state(self) -> dict[str, Any]:
        return _get_json(f"http://127.0.0.1:{self.master_ui_port}/json/")  # type: ignore[no-any-return]

    def daemon_pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in self.dir.glob("*.pid")}

    def executors_of(self, worker: str) -> dict[str, int]:
        """Executor id -> pid of the executor JVMs a worker (e.g. 'worker-1') has started."""
        out = {}
        for pid in _descendants(self.daemon_pids()[worker]):
            args = _cmdline(pid).split()
            if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in args and "--executor-id" in args:
                out[args[args.index("--executor-id") + 1]] = pid
        self.seen_pids.update(out.values())
        return out

    def submit(self, name: str, job: Path, job_args: list[str], spark_args: list[str] = (), *,  # type: ignore[assignment]
               cwd: Path) -> Submission:
        """spark-submit `job` to this cluster. Its driver and executors run as the test session's JVM does
        (conftest's SMALL_JVM): short-lived JVMs on small data, sharing the 2 cores with the other test worker."""
        cmd = [str(REPO / "scripts" / "submit.sh"), "--master", self.master_url, "--executor-memory", EXECUTOR_MEMORY,
               "--driver-java-options", SMALL_JVM, "--conf", f"spark.executor.extraJavaOptions={SMALL_JVM}",
               *spark_args, str(job), *job_args]
        out, err = cwd / f"{name}.out", cwd / f"{name}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL, cwd=cwd, env=_clean_env(),
                                    start_new_session=True)
        sub = Submission(name, proc, out, err)
        self.submissions.append(sub)
        self.seen_pids.add(proc.pid)
        return sub

    def wait_idle(self, timeout: float = 120) -> None:
        """Until the master runs no application (a killed driver's executors are gone)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.state()["activeapps"]:
                return
            time.sleep(0.5)
        raise AssertionError(f"applications still active after {timeout}s: {self.state()['activeapps']}")

    def ours(self) -> list[int]:
        """Live processes this cluster started: recorded pids, and any JVM pointing at its folder or ports."""
        marks = (str(self.dir), self.master_url)  # workers' and drivers' --master; executors: by their cwd
        found = {p for p in self.seen_pids if _alive(p)}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            cmd = _cmdline(int(d.name))
            try:
                cwd = os.readlink(d / "cwd")
            except OSError:
                cwd = ""
            if ("org.apache.spark" in cmd or "pyspark" in cmd or "environment/bin/python" in cmd) and (
                    any(m in cmd for m in marks) or cwd.startswith(str(self.dir))) and _alive(int(d.name)):
                found.add(int(d.name))
        return sorted(found)


@pytest.fixture(scope="module")
def packaged() -> None:
    """The wheel and the packed environment, built from this working tree (offline after set-up)."""
    res = subprocess.run([str(REPO / "scripts" / "package.sh")], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (REPO / "dist" / "custseg-env.tar.gz").is_file()


@pytest.fixture(scope="module")
def cluster(packaged: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and two workers (one core, 2 GB each) on 127.0.0.1, on free ports; torn down by pid."""
    root = tmp_path_factory.mktemp("cluster")
    base = _free_port_base(6)
    ports = {
        "CUSTSEG_MASTER_PORT": os.environ.get("CUSTSEG_MASTER_PORT", str(base)),
        "CUSTSEG_MASTER_UI_PORT": os.environ.get("CUSTSEG_MASTER_UI_PORT", str(base + 1)),
        "CUSTSEG_WORKER_PORT": os.environ.get("CUSTSEG_WORKER_PORT", str(base + 1)),  # workers: +1, +2
        "CUSTSEG_WORKER_UI_PORT": os.environ.get("CUSTSEG_WORKER_UI_PORT", str(base + 3)),  # +1, +2
    }
    env = {**os.environ, "CUSTSEG_CLUSTER_DIR": str(root), "CUSTSEG_WORKERS": "2", "CUSTSEG_WORKER_CORES": "1",
           "CUSTSEG_WORKER_MEMORY": "2g", **ports}
    c = Cluster(root, env, int(ports["CUSTSEG_MASTER_PORT"]), int(ports["CUSTSEG_MASTER_UI_PORT"]),
                int(ports["CUSTSEG_WORKER_PORT"]))
    try:
        res = c.script("start")
        c.seen_pids.update(c.daemon_pids().values())
        assert res.returncode == 0, res.stdout + res.stderr
        state = c.state()
        assert state["aliveworkers"] == 2 and state["cores"] == 2, state
        yield c
    finally:
        for sub in c.submissions:
            sub.kill()
        stop = c.script("stop")
        leftovers = c.ours()
        for pid in leftovers:  # should be none: stop ends the daemons and their executors
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert leftovers == [], f"processes left running after local_cluster.sh stop: {leftovers}"


@pytest.fixture(autouse=True)
def _end_own_submissions(cluster: Cluster) -> Iterator[None]:
    """A test's spark-submits end with the test, passed or failed (the cluster outlives it)."""
    started = len(cluster.submissions)
    yield
    for sub in cluster.submissions[started:]:
        sub.kill()


# --- comparing tables -----------------------------------------------------------------------------

def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return bool(a == b or abs(a - b) <= REL_TOL * max(abs(a), abs(b)) + ABS_TOL)


def _diff_values(where: str, a: Any, b: Any, out: list[str]) -> None:
    if isinstance(a, float) or isinstance(b, float):
        if not _close(a, b):
            out.append(f"{where}: {a!r} != {b!r}")
    elif isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            out.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
        for k in a.keys() & b.keys():
            _diff_values(f"{where}[{k}]", a[k], b[k], out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff_values(f"{where}[{i}]", x, y, out)
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def _rows(spark, path: str, key: list[str], version: int | None = None,  # type: ignore[no-untyped-def]
          drop: tuple[str, ...] = ()) -> dict[Any, dict[str, Any]]:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    rows = {}
    for r in reader.load(path).collect():
        d = {k: v for k, v in r.asDict(recursive=True).items() if k not in drop}
        rows[tuple(d[k] for k in key)] = d
    return rows


def _diff_tables(a: dict[Any, dict[str, Any]], b: dict[Any, dict[str, Any]], name: str) -> list[str]:
    out: list[str] = []
    if a.keys() != b.keys():
        return [f"{name}: keys differ: {len(a.keys() - b.keys())} only in the first, "
                f"{len(b.keys() - a.keys())} only in the second"]
    for k in a:
        _diff_values(f"{name}{list(k)}", a[k], b[k], out)
    return out


def _diff_profiles(a: dict[Any, dict[str, Any]], b: dict[Any, dict[str, Any]]) -> list[str]:
    """Profiles: every value within tolerance; a lift only where the population mean is not ~0.

    A lift is segment mean / population mean. For the 'other' spend shares of the generated data (all
    categories are among the top ones) both means are float noise of order 1e-17, and so is their ratio.
    """
    pop_mean = a[(-1,)]["feature_mean"]
    meaningful = {k for k, v in pop_mean.items() if v is not None and abs(v) > 1e-9}
    strip = lambda rows: {k: {**v, "feature_lift": {f: x for f, x in (v["feature_lift"] or {}).items()  # noqa: E731
                                                     if f in meaningful}} for k, v in rows.items()}
    return _diff_tables(strip(a), strip(b), "segment_profiles")


# --- the pipeline on the cluster equals local mode --------------------------------------------------

def _toml(path: Path, settings: dict[str, dict[str, Any]]) -> Path:
    def value(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    text = ""
    for section, values in settings.items():
        text += f"[{section}]\n" + "".join(f'"{k}" = {value(v)}\n' for k, v in values.items()) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


COLUMNS = {"customer_id": "CustomerID", "timestamp": "InvoiceDate", "quantity": "Quantity", "unit_price": "UnitPrice",
           "transaction_id": "InvoiceNo", "category": "Category", "channel": "Channel", "country": "Country"}


def test_pipeline_on_the_cluster_equals_local_mode(spark, cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the input: the e2e test's generated log (1,500 customers, about 79,000 lines)
    log_path = tmp_path / "log.csv"
    gen = config.load(None, [f"input.path={log_path}", f"generate.path={log_path}",
                             f"generate.truth_path={tmp_path}/truth",
                             f"output.root={tmp_path}/unused", "generate.customers=1500", "generate.seed=11",
                             *GENERATED_COLUMNS])
    sample.run(spark, gen)

    # One configuration for both runs. The partitioning settings equal the test session's (conftest.py), so
    # both runs split the data the same way: KMeans' k-means|| initialisation samples per partition.
    conf = _toml(tmp_path / "cluster.toml", {
        "spark": {"shuffle_partitions": 2, "log_level": "WARN"},
        "spark.conf": {"spark.default.parallelism": "2", "spark.databricks.delta.snapshotPartitions": "1",
                       "spark.sql.codegen.wholeStage": "false", "spark.ui.enabled": "false"},
        "input": {"path": str(log_path), "format": "csv"},
        "input.columns": COLUMNS,
        "segment": {"k_range": [4, 6], "n_starts": 2, "max_iter": 20},
        "explain": {"naming_rules": str(REPO / "conf" / "naming.toml"),
                    "playbook": str(REPO / "conf" / "playbook.toml")},
        "output": {"root": f"file://{tmp_path}/cluster"},
        "run": {"seed": 42},
    })

    # 1. where the executors and the driver get custseg from
    probe = cluster.submit("probe", REPO / "tests" / "cluster_probe.py", [str(tmp_path / "probe.json"), "2"],
                           ["--conf", "spark.ui.enabled=false"], cwd=tmp_path)
    assert probe.wait(600) == 0, probe.tail()
    seen = json.loads((tmp_path / "probe.json").read_text())
    assert seen["executors_registered"] == 2
    env_site = "/environment/lib/python3.11/site-packages/custseg/__init__.py"
    workers_used = set()
    for task in seen["tasks"]:
        # executor-side Python: the unpacked archive in the executor's working folder, under a worker of ours
        assert task["cwd"].startswith(str(cluster.dir)) and "/work/app-" in task["cwd"], task
        assert task["custseg"] == task["cwd"] + env_site, task
        assert task["python"] == task["cwd"] + "/environment/bin/python"
        assert task["prefix"] == task["cwd"] + "/environment"
        assert str(REPO / "lib") not in task["pythonpath"] and ".venv/bin" not in task["python"], task
        assert task["sums"][0] == task["sums"][1] > 0, task  # numpy and pyarrow native code ran
        workers_used.add(task["cwd"].split("/work/app-")[0])
    assert len(workers_used) == 2, f"tasks ran on {workers_used}"
    assert seen["driver"]["custseg"].startswith(str(REPO / "build" / "cluster-env")), seen["driver"]

    # 2. the whole pipeline on the cluster
    run = cluster.submit("pipeline", REPO / "jobs" / "run_pipeline.py", ["--conf", str(conf), "--as-of", str(AS_OF)],
                         cwd=tmp_path)
    assert run.wait(1200) == 0, run.tail()
    assert "segments (0 = highest spend)" in run.stdout()

    # 3. the same configuration and input in local mode (this test session: local[2])
    local_cfg = config.load(str(conf), [f"output.root=file://{tmp_path}/local"])
    t0 = time.perf_counter()
    runner.run(spark, local_cfg, pipeline.STAGES, AS_OF)
    local_seconds = round(time.perf_counter() - t0, 1)
    print(f"\ncluster pipeline: spark-submit wall {run.seconds} s (incl. JVM start); local mode in-process "
          f"{local_seconds} s; probe {probe.seconds} s")

    # 4. the same tables
    a, b = f"{tmp_path}/local", f"{tmp_path}/cluster"
    diffs: list[str] = []
    for t in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE):
        na, nb = tables.read(spark, f"{a}/{t}").count(), tables.read(spark, f"{b}/{t}").count()
        if na != nb:
            diffs.append(f"{t}: {na} rows != {nb}")
    tx_cols = [c for c in tables.read(spark, f"{a}/{C.TABLE_TRANSACTIONS}").columns if c != C.INGEST_BATCH]
    only_one_side = tables.read(spark, f"{a}/{C.TABLE_TRANSACTIONS}").select(tx_cols).exceptAll(
        tables.read(spark, f"{b}/{C.TABLE_TRANSACTIONS}").select(tx_cols)).count()
    if only_one_side:
        diffs.append(f"transactions: {only_one_side} local rows not on the cluster")
    diffs += _diff_tables(_rows(spark, f"{a}/{C.TABLE_CUSTOMER_FEATURES}", [C.CUSTOMER_ID]),
                          _rows(spark, f"{b}/{C.TABLE_CUSTOMER_FEATURES}", [C.CUSTOMER_ID]), "customer_features")
    seg_a = _rows(spark, f"{a}/{C.TABLE_SEGMENTS}", [C.CUSTOMER_ID], drop=(C.RUN_ID, C.MODEL_RUN_ID))
    seg_b = _rows(spark, f"{b}/{C.TABLE_SEGMENTS}", [C.CUSTOMER_ID], drop=(C.RUN_ID, C.MODEL_RUN_ID))
    diffs += _diff_tables(seg_a, seg_b, "segments")
    per_candidate = ["algorithm", "k"]
    diffs += _diff_tables(_rows(spark, f"{a}/{C.TABLE_MODEL_SELECTION}", per_candidate, drop=(C.RUN_ID, "fit_seconds")),
                          _rows(spark, f"{b}/{C.TABLE_MODEL_SELECTION}", per_candidate, drop=(C.RUN_ID, "fit_seconds")),
                          "model_selection")
    drop = (C.RUN_ID, C.MODEL_RUN_ID)
    diffs += _diff_profiles(_rows(spark, f"{a}/{C.TABLE_SEGMENT_PROFILES}", [C.SEGMENT_ID], drop=drop),
                            _rows(spark, f"{b}/{C.TABLE_SEGMENT_PROFILES}", [C.SEGMENT_ID], drop=drop))
    # names, rules (the surrogate tree, trained on the same split of the same data) and actions
    described = [{r[C.SEGMENT_ID]: (r[C.SEGMENT_NAME], [x["condition"] for x in r["rules"]], r["action"])
                  for r in tables.read(spark, f"{root}/{C.TABLE_SEGMENT_DESCRIPTIONS}").collect()} for root in (a, b)]
    if described[0] != described[1]:
        diffs.append(f"segment_descriptions: {described[0]} != {described[1]}")
    assert diffs == [], "\n".join(diffs[:40])
    assert len(seg_b) > 1000 and len({v[C.SEGMENT_ID] for v in seg_b.values()}) >= 4
    runs = tables.read(spark, f"{b}/{C.TABLE_RUNS}").collect()
    assert [r["outcome"] for r in runs] == ["succeeded"]

    # 5. scoring through spark-submit with the bundle the cluster's run saved: every customer keeps its segment
    score = cluster.submit("score", REPO / "jobs" / "score.py", ["--conf", str(conf), "--as-of", str(AS_OF)],
                           cwd=tmp_path)
    assert score.wait(600) == 0, score.tail()
    assert "scored with model" in score.stdout()
    scored = _rows(spark, f"{b}/{C.TABLE_SEGMENTS}", [C.CUSTOMER_ID])
    assert {c: v[C.SEGMENT_ID] for c, v in scored.items()} == {c: v[C.SEGMENT_ID] for c, v in seg_b.items()}
    assert {v[C.ASSIGNMENT] for v in scored.values()} == {C.ASSIGNMENT_SCORED}


# --- a lost worker and a killed driver ----------------------------------------------------------------

FAULT_CUSTOMERS = 12_000  # about 650,000 lines
FAULT_LINES = 50 * FAULT_CUSTOMERS  # fewer than the batch holds (about 54 per customer)
FAULT_FEATURES_AS_OF = AS_OF


def _parquet_files(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*.parquet")} if path.exists() else set()


def _events(folder: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name.startswith("events_"):  # not the .crc checksums nor the appstatus marker
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def _latest_run(spark, root: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return tables.read(spark, f"{root}/{C.TABLE_RUNS}").orderBy(F.desc("started_at")).first().asDict(recursive=True)


def test_lost_worker_and_killed_driver(spark, cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inbox = tmp_path / "inbox"
    root_dir = tmp_path / "out"
    root = f"file://{root_dir}"
    common = [f"input.path={inbox}", "input.format=parquet", "ingest.mode=append", f"output.root={root}",
              f"generate.truth_path={tmp_path}/truth", "generate.format=parquet", *GENERATED_COLUMNS]

    # the input, in three batches: a small one, ingested in local mode (the tables' previous version); a
    # second small one, whose append is killed mid-write; and about 650,000 lines for the features stage
    spark.conf.set("spark.sql.codegen.wholeStage", "true")  # the session turns it off for tiny data
    try:
        def generate(path: Path, customers: int, seed: int, files: int) -> sample.GenerateResult:
            return sample.run(spark, config.load(None, [
                *common, f"generate.path={path}", f"generate.customers={customers}", f"generate.seed={seed}",
                f"generate.partitions={files}"]))

        generate(inbox, 2000, 21, 2)
        generate(tmp_path / "batch2", 3000, 33, 2)
        big = generate(tmp_path / "batch3", FAULT_CUSTOMERS, 7, 8)
    finally:
        spark.conf.set("spark.sql.codegen.wholeStage", "false")
    assert big.rows > FAULT_LINES
    first = runner.run_stage(spark, config.load(None, common), "ingest")
    first_clean = first.clean  # type: ignore[attr-defined]

    def deliver(batch: str) -> None:
        for f in (tmp_path / batch).glob("part-*.parquet"):
            f.rename(inbox / f.name)

    conf = _toml(tmp_path / "fault.toml", {
        "spark": {"shuffle_partitions": 4, "log_level": "WARN"},
        "spark.conf": {"spark.databricks.delta.snapshotPartitions": "2"},
        "input": {"path": str(inbox), "format": "parquet"},
        "input.columns": COLUMNS,
        "ingest": {"mode": "append"},
        "output": {"root": root},
    })
    tx_dir = root_dir / C.TABLE_TRANSACTIONS
    watched = (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE, C.TABLE_INGESTED_FILES, C.TABLE_RUNS)

    # --- 1. kill the driver while the append writes the second batch's transactions ---------------
    before = {t: tables.version(spark, f"{root}/{t}") for t in watched}
    rows_before = tables.read(spark, f"{root}/{C.TABLE_TRANSACTIONS}").count()
    assert rows_before == first_clean
    files_before = _parquet_files(tx_dir)
    deliver("batch2")
    killed = cluster.submit("ingest-killed", REPO / "jobs" / "run_pipeline.py",
                            ["--conf", str(conf), "--only", "ingest"],
                            ["--conf", "spark.ui.enabled=false"], cwd=tmp_path)
    new_at_kill: set[str] = set()
    deadline = time.time() + 900
    while time.time() < deadline:
        assert killed.proc.poll() is None, "the run ended before its transactions write began:\n" + killed.tail()
        new_at_kill = _parquet_files(tx_dir) - files_before
        if new_at_kill:
            os.killpg(killed.proc.pid, signal.SIGKILL)  # the driver: spark-submit's JVM and its Python
            break
        time.sleep(0.05)
    else:
        pytest.fail("the transactions write never started")
    killed.wait(60)
    assert killed.proc.returncode == -signal.SIGKILL
    cluster.wait_idle()
    written_by_killed = _parquet_files(tx_dir) - files_before
    after_kill = {t: tables.version(spark, f"{root}/{t}") for t in watched}
    # the one commit a killed append leaves is its claim of batch 2's files in the manifest (state claimed)
    claimed = {**before, C.TABLE_INGESTED_FILES: before[C.TABLE_INGESTED_FILES] + 1}  # type: ignore[operator]
    assert after_kill == claimed, f"a table moved although its run was killed: {before} -> {after_kill}"
    states = tables.read(spark, f"{root}/{C.TABLE_INGESTED_FILES}").groupBy(C.FILE_STATE).count().collect()
    assert {r[0]: r[1] for r in states} == {"done": 2, "claimed": 2}
    assert tables.read(spark, f"{root}/{C.TABLE_TRANSACTIONS}").count() == rows_before
    print(f"\ndriver killed {killed.seconds} s into the run, with {len(new_at_kill)} of the batch's files written "
          f"({len(written_by_killed)} once it was dead); table versions stayed {before}")

    # --- 2. the next run recovers: batches 2 and 3 land once, then features (the undisturbed reference) --
    deliver("batch3")
    # the crash is known: take its claims over at once (left alone, they would wait ingest.claim_timeout_minutes)
    recovery = cluster.submit("ingest-features", REPO / "jobs" / "run_pipeline.py",
                              ["--conf", str(conf), "--only", "ingest", "--only", "features", "--as-of", str(AS_OF),
                               "--set", "ingest.claim_timeout_minutes=0"],
                              ["--conf", "spark.ui.enabled=false"], cwd=tmp_path)
    assert recovery.wait(1800) == 0, recovery.tail()
    rec = _latest_run(spark, root)
    assert rec["outcome"] == "succeeded" and rec["stages"] == ["ingest", "features"]
    second_clean = rec["counts"]["ingest.clean"]
    assert second_clean > FAULT_LINES
    tx = tables.read(spark, f"{root}/{C.TABLE_TRANSACTIONS}")
    assert tx.count() == first_clean + second_clean
    business = [c for c in tx.columns if c not in (C.INGEST_BATCH, C.SOURCE_FILE)]
    assert tx.groupBy(*business).count().filter(F.col("count") > 1).count() == 0, "duplicate lines"
    manifest = [r[C.FILE_PATH] for r in tables.read(spark, f"{root}/{C.TABLE_INGESTED_FILES}").collect()]
    assert len(manifest) == len(set(manifest)) == 12
    assert not ({unquote(urlparse(p).path) for p in tx.inputFiles()} & written_by_killed), \
        "the killed run's files became part of the table"
    features_path = f"{root}/{C.TABLE_CUSTOMER_FEATURES}"
    reference_version = tables.version(spark, features_path)
    print(f"recovery run (ingest of {second_clean:,} lines from batches 2 and 3 + features): {recovery.seconds} s; "
          f"stages {rec['stage_seconds']}")

    # --- 3. lose a worker while the features tasks run --------------------------------------------
    events = tmp_path / "events"
    events.mkdir()
    ui_port = _free_port()
    lost = cluster.submit("features-lost-worker", REPO / "jobs" / "run_pipeline.py",
                          ["--conf", str(conf), "--only", "features", "--as-of", str(AS_OF)],
                          # one split per file (splits of at most 1 MB, files of about 100 KB): the scan stage
                          # has many tasks to lose one of (Spark would otherwise pack the small files into few)
                          ["--conf", "spark.sql.files.maxPartitionBytes=1m",
                           "--conf", f"spark.ui.port={ui_port}", "--conf", "spark.eventLog.enabled=true",
                           "--conf", f"spark.eventLog.dir=file://{events}", "--conf", "spark.eventLog.compress=false"],
                          cwd=tmp_path)
    # The victim: worker-1, once its executor holds map output of the features aggregation's big stage
    # (the scan of the transactions; a third of it done) and is running another of its tasks. Killing the worker and its
    # executor loses both: the running task fails, and the finished ones' shuffle output must be recomputed.
    victim, victim_executor, kill_state = "worker-1", None, {}
    api = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    deadline = time.time() + 900
    while time.time() < deadline:
        assert lost.proc.poll() is None, "the run ended before a worker could be killed:\n" + lost.tail()
        log_so_far = lost.log()
        # the features stage's main job starts once the top categories and channels are known
        if "features: as of" in log_so_far and "features: finished" not in log_so_far:
            try:
                app = _get_json(api)[0]["id"]
                mine = cluster.executors_of(victim)
                for stage in _get_json(f"{api}/{app}/stages?status=active"):
                    if stage["numTasks"] < 8:
                        continue
                    stage_url = f"{api}/{app}/stages/{stage['stageId']}/{stage['attemptId']}"
                    tasks = _get_json(f"{stage_url}/taskList?length=10000")
                    done = Counter(t["executorId"] for t in tasks if t["status"] == "SUCCESS")
                    running = Counter(t["executorId"] for t in tasks if t["status"] == "RUNNING")
                    # a third of the stage done: less of it left to finish on one core after the loss
                    ready = [e for e in mine if done[e] >= 2 and running[e] > 0
                             and sum(done.values()) >= stage["numTasks"] // 3]
                    if ready:
                        victim_executor = ready[0]
                        kill_state = {"stage": stage["stageId"], "tasks": stage["numTasks"],
                                      "done_on_victim": done[victim_executor], "done": sum(done.values())}
                        break
            except (OSError, IndexError, ValueError):
                pass
            if victim_executor is not None:
                worker_pid = cluster.daemon_pids()[victim]
                for pid in [worker_pid, *_descendants(worker_pid)]:  # the worker JVM, its executor, their children
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                log_at_kill = lost.log()
                break
        time.sleep(0.2)
    else:
        pytest.fail("no features task ever ran on " + victim)
    assert "features: finished" not in log_at_kill
    assert lost.wait(1800) == 0, lost.tail()
    assert "features: finished" in lost.log()

    evs = _events(events)
    removed = [e for e in evs if e["Event"] == "SparkListenerExecutorRemoved"]
    task_ends = [e for e in evs if e["Event"] == "SparkListenerTaskEnd"]
    failed = Counter(e["Task End Reason"]["Reason"] for e in task_ends if e["Task End Reason"]["Reason"] != "Success")
    seen: set[tuple[int, int]] = set()
    rerun = 0  # successful task ends of a partition that had ended before (failed, resubmitted or lost)
    for e in task_ends:
        key = (e["Stage ID"], e["Task Info"]["Index"])
        rerun += key in seen and e["Task End Reason"]["Reason"] == "Success"
        seen.add(key)
    stage_retries = {(e["Stage Info"]["Stage ID"], e["Stage Info"]["Stage Attempt ID"]) for e in evs
                     if e["Event"] == "SparkListenerStageCompleted" and e["Stage Info"]["Stage Attempt ID"] > 0}
    assert [e["Executor ID"] for e in removed] == [victim_executor], removed
    assert failed["ExecutorLostFailure"] >= 1, f"the running task did not fail: {failed}"
    assert failed["Resubmitted"] + failed["FetchFailed"] >= 1, f"no lost map output was recomputed: {failed}"
    assert rerun >= kill_state["done_on_victim"], (rerun, kill_state)
    after = tables.version(spark, features_path)
    assert after == reference_version + 1
    diffs = _diff_tables(_rows(spark, features_path, [C.CUSTOMER_ID], version=reference_version),
                         _rows(spark, features_path, [C.CUSTOMER_ID], version=after), "customer_features")
    assert diffs == [], "\n".join(diffs[:40])
    print(f"lost worker: killed {victim} (executor {victim_executor}) in stage {kill_state['stage']} "
          f"({kill_state['tasks']} tasks, {kill_state['done']} done, "
          f"{kill_state['done_on_victim']} of them on the victim); "
          f"failed/lost task ends {dict(failed)}, {rerun} tasks re-ran successfully, stage re-attempts "
          f"{len(stage_retries)}; run took {lost.seconds} s; customer_features v{reference_version} == v{after}")
