"""The sample generator's knobs: activity (lines per customer) and the number of categories."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from custseg.sample import generate as G

START, END = dt.date(2022, 1, 1), dt.date(2024, 12, 31)


def test_category_names_cycle_through_the_base_categories() -> None:
    assert G.category_names(8) == list(G.CATEGORIES)
    names = G.category_names(20)
    assert names[:8] == list(G.CATEGORIES)
    assert names[8:11] == ["electronics_2", "home_2", "grocery_2"]
    assert names[16:] == ["electronics_3", "home_3", "grocery_3", "fashion_3"]
    assert len(set(names)) == 20


def test_more_categories_split_the_base_ones_and_keep_everything_else(spark) -> None:  # type: ignore[no-untyped-def]
    base, _ = G.generate(spark, 400, 5, START, END)
    wide, _ = G.generate(spark, 400, 5, START, END, n_categories=20)
    assert wide.count() == base.count()
    assert {r[0] for r in wide.select(G.G_CATEGORY).distinct().collect()} == set(G.category_names(20))
    # a variant's line is its base category's line: stripping the suffix gives the 8-category log back
    stripped = wide.withColumn(G.G_CATEGORY, F.regexp_replace(G.G_CATEGORY, "_[0-9]+$", ""))
    assert stripped.exceptAll(base).count() == 0 and base.exceptAll(stripped).count() == 0


def test_activity_scales_the_lines_per_customer(spark) -> None:  # type: ignore[no-untyped-def]
    def lines_per_customer(activity: float) -> float:
        log, _ = G.generate(spark, 2000, 3, START, END, activity=activity)
        return log.count() / 2000

    full, light = lines_per_customer(1.0), lines_per_customer(0.37)
    assert 45 < full < 65, full  # about 54 lines per customer
    assert 15 < light < 25, light  # about 20
    # every customer buys at least once, so scaling is not exactly proportional
    assert 0.33 < light / full < 0.45, (light, full)
