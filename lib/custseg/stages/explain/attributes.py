"""Customer attributes by segment: how each segment's customers spread over an attribute's values
(categorical) or what its values are (numeric), against the whole population (segment_id -1).

The counts come from distributed aggregations whose results are small: (segments + 1) x attributes x at
most `max_values` + 2 values. Shares, lifts and the chi-square tests are computed from those counts on the
driver, in pure Python (no scipy): `chi2_sf` is the regularized upper incomplete gamma function, by its
series or its continued fraction as in Numerical Recipes (`gammq`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import columns as C
from custseg.core.errors import StageError

POPULATION = -1  # segment_id of the population rows
OTHER_VALUE = "other"  # the categorical values beyond the `max_values` most frequent

PROFILE_SCHEMA = T.StructType([T.StructField(name, dtype) for name, dtype in (
    (C.SEGMENT_ID, T.IntegerType()), (C.ATTRIBUTE, T.StringType()), (C.ATTRIBUTE_KIND, T.StringType()),
    (C.ATTRIBUTE_VALUE, T.StringType()), ("customers", T.LongType()), ("share", T.DoubleType()),
    ("population_share", T.DoubleType()), ("lift", T.DoubleType()), ("p_value", T.DoubleType()),
    ("mean", T.DoubleType()), ("median", T.DoubleType()), ("population_mean", T.DoubleType()))])

_EPS = 1e-15  # relative accuracy of the gamma series and continued fraction
_FPMIN = 1e-300  # near the smallest double: keeps the continued fraction from dividing by zero
_ITMAX = 10_000


def attribute_profiles(members_df: DataFrame, attributes_df: DataFrame, categorical: list[str], numeric: list[str],
                       max_values: int) -> DataFrame:
    """One row per segment (and the population, -1), attribute and value: customers, share of the segment,
    share in the population, lift, and for categorical attributes the chi-square test's p-value; numeric
    attributes get a row (value null) with the customers who have a value, their mean and median and the lift
    of the mean, plus a row "unknown" for the members without one.

    `members_df`: customer_id and segment_id, one row per customer. `attributes_df`: customer_id (one row
    per customer) and the attribute columns. A member without an attributes row or with a null (or blank)
    value counts as "unknown": for every segment and categorical attribute, the customers over its values sum
    to the segment's size. Every value of the population is listed for every segment (0 customers included).
    Categorical values beyond the `max_values` most frequent in the population (ties: the smaller value
    first; "unknown" never takes a place) become "other". The p-value of a segment's rows tests segment
    against the rest of the population; the population's rows test the whole segments x values table; null
    when the table has fewer than two non-empty rows or columns.
    """
    _require(members_df, [C.CUSTOMER_ID, C.SEGMENT_ID], "members")
    _require(attributes_df, [C.CUSTOMER_ID, *categorical, *numeric], "attributes")
    names = [*categorical, *numeric]
    alias = {name: f"__a{i}" for i, name in enumerate(names)}  # any attribute name, segment_id too, is safe
    joined = members_df.select(C.CUSTOMER_ID, C.SEGMENT_ID).join(
        attributes_df.select(C.CUSTOMER_ID, *[F.col(f"`{n}`").alias(alias[n]) for n in names]), C.CUSTOMER_ID, "left")

    stats = _sizes_and_numeric(joined, [alias[n] for n in numeric])
    sizes = {seg: int(r["__size"]) for seg, r in stats.items()}
    if not sizes.get(POPULATION):
        return members_df.sparkSession.createDataFrame([], PROFILE_SCHEMA)
    counts = _categorical_counts(joined, [alias[n] for n in categorical], max_values)
    rows = [row for n in categorical for row in _categorical_rows(n, counts.get(alias[n], {}), sizes)]
    rows += [row for n in numeric for row in _numeric_rows(n, alias[n], stats)]
    return members_df.sparkSession.createDataFrame(rows, PROFILE_SCHEMA)


def _require(df: DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StageError(f"attribute profiles: the {what} lack column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(df.columns)})")


def _sizes_and_numeric(joined: DataFrame, numeric: list[str]) -> dict[int, Any]:
    """Segment id (POPULATION for all) -> its size and, per numeric attribute, customers with a value, mean and
    median: one aggregation, rolled up (the rollup's total row is the population)."""
    aggs = [F.count(F.lit(1)).alias("__size")]
    for c in numeric:
        v = F.col(c).try_cast("double")
        v = F.when(~F.isnan(v), v)
        aggs += [F.count(v).alias(f"{c}_n"), F.avg(v).alias(f"{c}_mean"),
                 F.percentile_approx(v, 0.5).alias(f"{c}_median")]
    rows = joined.rollup(C.SEGMENT_ID).agg(F.grouping(C.SEGMENT_ID).alias("__total"), *aggs).collect()  # k + 1
    return {POPULATION if r["__total"] else int(r[C.SEGMENT_ID]): r for r in rows}


def _categorical_counts(joined: DataFrame, categorical: list[str], max_values: int) -> dict[str, dict[int, Any]]:
    """Attribute -> segment -> value -> customers, the rare values merged into "other"."""
    if not categorical:
        return {}
    texts = joined.select(C.SEGMENT_ID, *[F.coalesce(F.nullif(F.trim(F.col(c).cast("string")), F.lit("")),
                                                     F.lit(C.UNKNOWN_VALUE)).alias(c) for c in categorical])
    cells = (texts.unpivot([C.SEGMENT_ID], [F.col(c) for c in categorical], C.ATTRIBUTE, C.ATTRIBUTE_VALUE)
             .groupBy(C.SEGMENT_ID, C.ATTRIBUTE, C.ATTRIBUTE_VALUE).agg(F.count(F.lit(1)).alias("n")))
    # rank the values by their customers in the population; "unknown" sorts last and is always kept
    is_unknown = F.col(C.ATTRIBUTE_VALUE) == C.UNKNOWN_VALUE
    in_population = F.sum("n").over(Window.partitionBy(C.ATTRIBUTE, C.ATTRIBUTE_VALUE))
    rank = F.dense_rank().over(Window.partitionBy(C.ATTRIBUTE).orderBy(is_unknown, F.desc("__pop"),
                                                                       C.ATTRIBUTE_VALUE))
    kept = F.when(is_unknown | (F.col("__rank") <= max_values), F.col(C.ATTRIBUTE_VALUE)).otherwise(F.lit(OTHER_VALUE))
    merged = (cells.withColumn("__pop", in_population).withColumn("__rank", rank)
              .groupBy(C.SEGMENT_ID, C.ATTRIBUTE, kept.alias(C.ATTRIBUTE_VALUE)).agg(F.sum("n").alias("n")))
    out: dict[str, dict[int, Any]] = {}
    for r in merged.collect():  # at most segments x attributes x (max_values + 2) rows
        by_segment = out.setdefault(r[C.ATTRIBUTE], {})
        by_segment.setdefault(int(r[C.SEGMENT_ID]), {})[r[C.ATTRIBUTE_VALUE]] = int(r["n"])
    return out


def _categorical_rows(name: str, counts: dict[int, dict[str, int]], sizes: dict[int, int]) -> list[tuple[Any, ...]]:
    segments = sorted(s for s in sizes if s != POPULATION)
    population: dict[str, int] = {}
    for s in segments:
        got = counts.get(s, {})
        if sum(got.values()) != sizes[s]:
            raise StageError(f"attribute profiles: {name}: segment {s} has {sizes[s]:,} customers but "
                             f"{sum(got.values()):,} values: the attributes have more than one row for a customer")
        for value, n in got.items():
            population[value] = population.get(value, 0) + n
    values = sorted(population, key=lambda v: (v in (OTHER_VALUE, C.UNKNOWN_VALUE), -population[v], v))
    total = sizes[POPULATION]
    table = [[counts.get(s, {}).get(v, 0) for v in values] for s in segments]
    pop_row = [population[v] for v in values]
    rows: list[tuple[Any, ...]] = []
    for s, seg_row in [(POPULATION, pop_row), *zip(segments, table, strict=True)]:
        rest = [p - n for p, n in zip(pop_row, seg_row, strict=True)]
        p_value = chi_square_p(table) if s == POPULATION else chi_square_p([seg_row, rest])
        for v, n in zip(values, seg_row, strict=True):
            share, pop_share = n / sizes[s], population[v] / total
            rows.append((s, name, C.KIND_CATEGORICAL, v, n, share, pop_share, share / pop_share, p_value,
                         None, None, None))
    return rows


def _numeric_rows(name: str, c: str, stats: dict[int, Any]) -> list[tuple[Any, ...]]:
    pop = stats[POPULATION]
    total, pop_n, pop_mean = int(pop["__size"]), int(pop[f"{c}_n"]), pop[f"{c}_mean"]
    rows: list[tuple[Any, ...]] = []
    for s in [POPULATION, *sorted(k for k in stats if k != POPULATION)]:
        r = stats[s]
        size, n, mean = int(r["__size"]), int(r[f"{c}_n"]), r[f"{c}_mean"]
        lift = mean / pop_mean if mean is not None and pop_mean else None
        rows.append((s, name, C.KIND_NUMERIC, None, n, n / size, pop_n / total, lift, None, mean,
                     r[f"{c}_median"], pop_mean))
        unknown_share, pop_unknown_share = (size - n) / size, (total - pop_n) / total
        rows.append((s, name, C.KIND_NUMERIC, C.UNKNOWN_VALUE, size - n, unknown_share, pop_unknown_share,
                     unknown_share / pop_unknown_share if pop_unknown_share else None, None, None, None, None))
    return rows


# --- the chi-square test, in pure Python ------------------------------------------------------------------------

def chi_square_p(table: Sequence[Sequence[int]]) -> float | None:
    """p-value of Pearson's chi-square test of independence on a table of counts (rows x columns).

    Empty rows and columns are left out; None when fewer than two rows or two columns remain (the test is
    undefined: one segment, or one value).
    """
    rows = [list(r) for r in table if sum(r) > 0]
    if not rows:
        return None
    keep = [j for j in range(len(rows[0])) if sum(r[j] for r in rows) > 0]
    rows = [[r[j] for j in keep] for r in rows]
    if len(rows) < 2 or len(keep) < 2:
        return None
    row_totals = [sum(r) for r in rows]
    col_totals = [sum(col) for col in zip(*rows, strict=True)]
    n = sum(row_totals)
    stat = 0.0
    for r, row_total in zip(rows, row_totals, strict=True):
        for observed, col_total in zip(r, col_totals, strict=True):
            expected = row_total * col_total / n
            stat += (observed - expected) ** 2 / expected
    return chi2_sf(stat, (len(rows) - 1) * (len(keep) - 1))


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square distributed with `dof` degrees of freedom: Q(dof / 2, statistic / 2)."""
    if dof <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {dof}")
    return gammq(dof / 2.0, max(statistic, 0.0) / 2.0)


def gammq(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = Gamma(a, x) / Gamma(a), for a > 0, x >= 0."""
    if a <= 0 or x < 0:
        raise ValueError(f"gammq needs a > 0 and x >= 0, got a={a}, x={x}")
    if x == 0:
        return 1.0
    if x < a + 1.0:  # the series converges fast here; Q = 1 - P
        return max(0.0, 1.0 - _gamma_series(a, x))
    return _gamma_continued_fraction(a, x)


def _prefactor(a: float, x: float) -> float:
    return math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_series(a: float, x: float) -> float:
    """P(a, x) by its series (Numerical Recipes' gser)."""
    ap, term = a, 1.0 / a
    total = term
    for _ in range(_ITMAX):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            return total * _prefactor(a, x)
    raise ArithmeticError(f"gamma series did not converge for a={a}, x={x}")


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, evaluated with the modified Lentz method (Numerical Recipes' gcf)."""
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _ITMAX):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _FPMIN if abs(d) < _FPMIN else d
        c = b + an / c
        c = _FPMIN if abs(c) < _FPMIN else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h * _prefactor(a, x)
    raise ArithmeticError(f"gamma continued fraction did not converge for a={a}, x={x}")
