"""README's "Running on your own log", run as written on logs shaped like real exports (generated here).

One log is shaped like the UCI Online Retail export (CSV in ISO-8859-1, US dates, cancellations, quoted
descriptions with commas and line breaks, blank customer ids, exact repeats), the other like a grocery
basket export (Parquet written by pyarrow with nanosecond timestamps, as pandas writes it; several
products of one basket alike on every column custseg maps). Neither is shipped: both are generated with
their expected counts, and the README's own commands must run on them with nothing else named.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from custseg import cli
from custseg.core import columns as C
from custseg.io import delta as tables

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_command(marker: str) -> list[str]:
    """The arguments of the README's `scripts/run_local.sh` example that contains `marker`."""
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("scripts/run_local.sh") and marker in line:
                return line.split()[1:]
    raise AssertionError(f"no run_local.sh example with {marker!r} in README.md")


def run_as_written(args: list[str], path: Path, out: Path) -> int:
    """scripts/run_local.sh is `custseg run --conf conf/local.toml --generate-if-missing ARGS`; the log's path
    and the output folder are this test's."""
    args = [a.replace(a.split("=", 1)[1], str(path)) if a.startswith("input.path=") else a for a in args]
    return cli.main(["run", "--conf", str(REPO / "conf" / "local.toml"), "--generate-if-missing", *args,
                     "--set", f"output.root={out}"])


def uci_log(path: Path, customers: int = 120, seed: int = 3) -> dict[str, int]:
    """An Online Retail-shaped CSV; returns the lines it holds and how ingest must count them."""
    rng = random.Random(seed)
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    products = [("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2.55), ("71053", "WHITE METAL LANTERN", 3.39),
                ("22752", '"SET 7 BABUSHKA NESTING BOXES, RED"', 7.65),
                ("21730", '"GLASS STAR FROSTED T-LIGHT HOLDER\nWITH A ""QUOTE"" IN IT"', 4.25),
                ("84029E", "RED WOOLLY HOTTIE WHITE HEART.", 3.39), ("22633", "HAND WARMER UNION JACK", 1.85),
                ("POST", "POSTAGE", 18.0), ("23084", "CAFÉ RABBIT NIGHT LIGHT", 1.79)]
    lines: list[str] = []
    invoice, n = 536365, {"clean": 0, "quarantined": 0, "duplicates": 0}
    t0 = dt.datetime(2010, 12, 1, 8, 26)
    for c in range(customers):
        cid = str(12346 + c)
        country = rng.choice(["United Kingdom", "France", "EIRE", "Germany"])
        for _ in range(rng.randint(1, 8)):
            invoice += 1
            when = t0 + dt.timedelta(minutes=rng.randint(0, 365 * 24 * 60))
            stamp = f"{when.month}/{when.day}/{when.year} {when.hour}:{when.minute:02d}"
            cancel = rng.random() < 0.08
            items = rng.sample(products, rng.randint(1, 4))
            qty = rng.choice([1, 2, 6, 12])  # one quantity for the whole invoice: lines alike but for the product
            for code, desc, price in items:
                q = -qty if cancel else qty
                lines.append(f"{'C' if cancel else ''}{invoice},{code},{desc},{q},{stamp},{price},{cid},{country}")
                n["clean"] += 1
            if rng.random() < 0.1:  # the export repeats a line exactly
                lines.append(lines[-1])
                n["duplicates"] += 1
    for i in range(5):  # lines without a customer: quarantined (missing_customer_id)
        lines.append(f"{invoice + 1 + i},22633,HAND WARMER UNION JACK,6,12/9/2011 12:50,1.85,,United Kingdom")
        n["quarantined"] += 1
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode("iso-8859-1"))
    n["input"] = n["clean"] + n["quarantined"] + n["duplicates"]
    n["customers"] = customers
    return n


def grocery_log(path: Path, households: int = 120, seed: int = 5) -> dict[str, int]:
    """A basket export as pandas writes Parquet (int64 nanosecond timestamps); returns the expected counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    cols: dict[str, list] = {k: [] for k in ("household_key", "BASKET_ID", "PRODUCT_ID", "DEPARTMENT", "QUANTITY",
                                            "SALES_VALUE", "STORE_ID", "TRANS_TS")}
    basket = 26984851472
    t0 = dt.datetime(2023, 1, 2, 7, 0)
    for h in range(households):
        for _ in range(rng.randint(2, 10)):
            basket += 1
            when = t0 + dt.timedelta(seconds=rng.randint(0, 360 * 86400), microseconds=rng.randint(0, 999) * 1000)
            store, dept = rng.randint(300, 340), rng.choice(["GROCERY", "PRODUCE", "DRUG GM", "MEAT"])
            for _ in range(rng.randint(1, 6)):  # several products, alike on every column custseg maps
                for k, v in (("household_key", f"{h + 1:04d}"), ("BASKET_ID", basket),
                             ("PRODUCT_ID", rng.randint(800000, 1200000)), ("DEPARTMENT", dept), ("QUANTITY", 1),
                             ("SALES_VALUE", 1.99), ("STORE_ID", store), ("TRANS_TS", when)):
                    cols[k].append(v)
    table = pa.table({**{k: v for k, v in cols.items() if k != "TRANS_TS"},
                      "TRANS_TS": pa.array(cols["TRANS_TS"], pa.timestamp("ns"))})
    pq.write_table(table, path)  # pyarrow's (and pandas') default: INT64 TIMESTAMP(NANOS)
    return {"input": table.num_rows, "clean": table.num_rows, "quarantined": 0, "duplicates": 0,
            "customers": households}


def check_run(spark: SparkSession, out: Path, expected: dict[str, int], segmented: bool = True) -> None:
    runs = tables.read(spark, str(out / C.TABLE_RUNS)).first()
    assert runs["outcome"] == "succeeded"
    counts = runs["counts"]
    assert (counts["ingest.input"], counts["ingest.clean"], counts["ingest.quarantined"],
            counts["ingest.duplicates"]) == (expected["input"], expected["clean"], expected["quarantined"],
                                             expected["duplicates"])
    features = tables.read(spark, str(out / C.TABLE_CUSTOMER_FEATURES))
    assert features.count() == expected["customers"]
    if not segmented:
        return
    segments = tables.read(spark, str(out / C.TABLE_SEGMENTS))
    assert segments.select(C.CUSTOMER_ID).distinct().count() == expected["customers"]
    profiles = tables.read(spark, str(out / C.TABLE_SEGMENT_PROFILES))
    assert profiles.filter("is_population").first()["customers"] == expected["customers"]


def test_readme_command_on_an_online_retail_export(spark: SparkSession, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    expected = uci_log(tmp_path / "online_retail.csv")
    caplog.set_level(logging.INFO)
    args = readme_command("online_retail.csv")
    assert run_as_written(args, tmp_path / "online_retail.csv", tmp_path / "out") == 0
    check_run(spark, tmp_path / "out", expected)
    # the printed summary ends with every table the run wrote, its rows and version
    printed = capsys.readouterr().out
    assert f"tables under {tmp_path / 'out'}:" in printed
    assert re.search(rf"^  transactions +{expected['clean']:,} rows  \(version \d+\)$", printed, re.M), printed
    assert re.search(rf"^  segments +{expected['customers']:,} rows  \(version \d+\)$", printed, re.M), printed
    assert re.search(r"^  runs +1 rows  \(version 0\)$", printed, re.M), printed
    assert "input.columns.customer_id: using column 'CustomerID' (recognised by its name)" in caplog.text
    assert "input.columns.channel: no such column in the log; not used" in caplog.text
    tx = tables.read(spark, str(tmp_path / "out" / C.TABLE_TRANSACTIONS))
    assert tx.filter(f"{C.TRANSACTION_ID} LIKE 'C%'").filter(f"{C.AMOUNT} >= 0").count() == 0  # cancellations


def test_readme_command_on_a_grocery_basket_export(spark: SparkSession, tmp_path: Path) -> None:
    expected = grocery_log(tmp_path / "baskets.parquet")
    # the whole run is the other test's; here the stages that read the log (segmenting takes minutes)
    args = [*readme_command("baskets.parquet"), "--only", "ingest", "--only", "features"]
    assert run_as_written(args, tmp_path / "baskets.parquet", tmp_path / "out") == 0
    check_run(spark, tmp_path / "out", expected, segmented=False)
    tx = tables.read(spark, str(tmp_path / "out" / C.TABLE_TRANSACTIONS))
    first = tx.orderBy(C.TXN_TS).first()
    assert first[C.CUSTOMER_ID].startswith("0")  # leading zeros kept
    assert first[C.TXN_TS].microsecond % 1000 == 0 and first[C.TXN_TS].year == 2023
