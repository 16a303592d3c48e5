"""Which log column plays which role: named ones, recognised ones, and the errors (pure Python)."""

from __future__ import annotations

import pytest

from custseg.core import columns as C
from custseg.core import config
from custseg.core.errors import ConfigError, InputError
from custseg.stages.ingest import mapping

UNSET: dict[str, str | None] = {r: None for r in C.ROLES}
UCI = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
UCI_II = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
GROCERY = ["household_key", "BASKET_ID", "PRODUCT_ID", "DEPARTMENT", "QUANTITY", "SALES_VALUE", "STORE_ID",
           "TRANS_TIME"]


def test_uci_online_retail_columns_are_recognised() -> None:
    got = mapping.resolve(UCI, UNSET)
    assert got.columns == {"customer_id": "CustomerID", "timestamp": "InvoiceDate", "quantity": "Quantity",
                           "unit_price": "UnitPrice", "transaction_id": "InvoiceNo", "country": "Country"}
    assert "input.columns.customer_id: using column 'CustomerID' (recognised by its name)" in got.notes
    assert "input.columns.amount: not in the log; amount = quantity x unit price" in got.notes
    assert "input.columns.channel: no such column in the log; not used" in got.notes


def test_uci_online_retail_ii_names_with_a_space() -> None:
    got = mapping.resolve(UCI_II, UNSET)
    assert (got.columns["customer_id"], got.columns["unit_price"], got.columns["transaction_id"]) == (
        "Customer ID", "Price", "Invoice")


def test_a_grocery_export_needs_only_its_timestamp_named() -> None:
    with pytest.raises(InputError, match=r"^input\.columns\.timestamp: no column for the timestamp in the log"):
        mapping.resolve(GROCERY, UNSET)
    got = mapping.resolve(GROCERY, {**UNSET, "timestamp": "TRANS_TIME"})
    assert got.columns == {"customer_id": "household_key", "timestamp": "TRANS_TIME", "amount": "SALES_VALUE",
                           "quantity": "QUANTITY", "transaction_id": "BASKET_ID", "category": "DEPARTMENT"}


def test_a_named_role_wins_and_its_column_is_not_taken_twice() -> None:
    got = mapping.resolve(["cust", "CustomerID", "when", "amount"], {**UNSET, "customer_id": "cust",
                                                                     "timestamp": "when"})
    assert got.columns == {"customer_id": "cust", "timestamp": "when", "amount": "amount"}


def test_a_named_column_that_is_missing_is_an_error() -> None:
    with pytest.raises(InputError) as e:
        mapping.resolve(UCI, {**UNSET, "channel": "Channel"})
    assert str(e.value) == ("input: mapped column not in the log: input.columns.channel='Channel' (columns found: "
                            "InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country)")


def test_a_role_switched_off_is_not_recognised() -> None:
    got = mapping.resolve(UCI, {**UNSET, "country": "", "transaction_id": ""})
    assert "country" not in got.columns and "transaction_id" not in got.columns


def test_recognition_off_needs_every_role_named() -> None:
    with pytest.raises(InputError, match=r"^input\.columns\.customer_id: no column for the customer id"):
        mapping.resolve(UCI, UNSET, recognise=False)


def test_no_amount_and_no_price_says_what_to_set() -> None:
    with pytest.raises(InputError) as e:
        mapping.resolve(["CustomerID", "InvoiceDate", "Quantity"], UNSET)
    assert str(e.value).startswith("input.columns.amount: no column for an amount (input.columns.amount), or a "
                                   "quantity and a unit price")


def test_column_names_in_messages_are_printable() -> None:
    with pytest.raises(InputError) as e:
        mapping.resolve(["\x1b[31mred\x07", "x" * 200], UNSET)
    assert "\x1b" not in str(e.value) and "\x07" not in str(e.value) and "?[31mred?" in str(e.value)


def test_config_keeps_empty_as_switched_off_and_unset_as_recognise() -> None:
    cfg = config.load(None, ["input.path=x.csv", "output.root=out", "input.columns.country="])
    assert cfg.column_settings["country"] == "" and cfg.column_settings["customer_id"] is None
    with pytest.raises(ConfigError, match=r"^input\.columns\.customer_id: required"):
        config.load(None, ["input.path=x.csv", "output.root=out", "input.columns.customer_id="])
