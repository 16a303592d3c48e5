"""Which source column plays which role: the ones the configuration names, and common names for the rest.

Pure Python on the log's column names (no Spark). A role named in `input.columns.ROLE` must exist in the
log; a role left unset takes the first column whose name is a common name for it (compared ignoring case,
spaces, underscores and dashes), unless `input.recognise_columns` is off; a role set to "" is not used.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from custseg.core import columns as C
from custseg.core.errors import InputError
from custseg.io.sources import printable

log = logging.getLogger(__name__)

# Common names per role, most specific first. Real exports these come from: UCI Online Retail (I and II),
# grocery basket exports (household, basket, sales value, department), e-commerce order logs.
KNOWN_NAMES: dict[str, tuple[str, ...]] = {
    C.ROLE_CUSTOMER_ID: ("customerid", "customer", "customerno", "customernumber", "customerkey", "custid",
                         "clientid", "client", "userid", "memberid", "accountid", "shopperid", "householdid",
                         "householdkey", "household"),
    C.ROLE_TIMESTAMP: ("invoicedate", "transactiondate", "transactiontime", "transactiontimestamp", "txnts",
                       "txntimestamp", "txndate", "timestamp", "orderdate", "orderdatetime", "ordertimestamp",
                       "purchasedate", "purchasetime", "purchasetimestamp", "saledate", "datetime", "eventtime",
                       "createdat", "date"),
    C.ROLE_AMOUNT: ("amount", "totalamount", "lineamount", "linetotal", "salesvalue", "salesamount", "saleamount",
                    "netamount", "revenue", "spend", "totalprice", "sales"),
    C.ROLE_QUANTITY: ("quantity", "qty", "units", "unitssold"),
    C.ROLE_UNIT_PRICE: ("unitprice", "price", "priceeach", "itemprice", "unitcost"),
    C.ROLE_TRANSACTION_ID: ("invoiceno", "invoice", "invoiceid", "invoicenumber", "transactionid", "txnid",
                            "orderid", "orderno", "ordernumber", "basketid", "basketkey", "receiptid", "receiptno",
                            "ticketid"),
    C.ROLE_CATEGORY: ("category", "productcategory", "categoryname", "department", "productdepartment"),
    C.ROLE_CHANNEL: ("channel", "saleschannel", "orderchannel"),
    C.ROLE_COUNTRY: ("country", "countrycode", "customercountry"),
}

_REQUIRED = (C.ROLE_CUSTOMER_ID, C.ROLE_TIMESTAMP)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name).lower()


@dataclass
class ColumnMapping:
    """The resolved mapping: role -> source column, and one line per decision the user did not write."""

    columns: dict[str, str]
    notes: list[str] = field(default_factory=list)


def resolve(log_columns: Sequence[str], settings: Mapping[str, str | None], recognise: bool = True) -> ColumnMapping:
    """Map roles to the log's columns; raise InputError naming the key to set when a role cannot be filled."""
    present = list(log_columns)
    shown = ", ".join(printable(c, 60) for c in present) or "none"
    missing = [f"input.columns.{role}={col!r}" for role, col in settings.items() if col and col not in present]
    if missing:
        raise InputError(f"input: mapped column not in the log: {'; '.join(missing)} (columns found: {shown})")
    out = {role: col for role, col in settings.items() if col}
    notes: list[str] = []
    taken = set(out.values())
    by_key: dict[str, str] = {}
    for col in present:
        by_key.setdefault(_key(col), col)  # two columns with one key: the first wins, the other stays free
    for role in C.ROLES:
        if settings.get(role) is not None:  # named, or "" (switched off)
            continue
        found = next((by_key[k] for k in KNOWN_NAMES[role] if k in by_key and by_key[k] not in taken), None)
        if recognise and found is not None:
            out[role] = found
            taken.add(found)
            notes.append(f"input.columns.{role}: using column {printable(found, 60)!r} (recognised by its name)")
        elif role not in _REQUIRED and role not in (C.ROLE_AMOUNT, C.ROLE_QUANTITY, C.ROLE_UNIT_PRICE):
            notes.append(f"input.columns.{role}: no such column in the log; not used")
    for role in _REQUIRED:
        if role not in out:
            raise InputError(_unfilled(role, present, shown, recognise))
    if C.ROLE_AMOUNT not in out:
        if C.ROLE_QUANTITY in out and C.ROLE_UNIT_PRICE in out:
            notes.append("input.columns.amount: not in the log; amount = quantity x unit price")
        else:
            raise InputError(_unfilled(C.ROLE_AMOUNT, present, shown, recognise))
    else:
        for role in (C.ROLE_QUANTITY, C.ROLE_UNIT_PRICE):
            if role not in out and settings.get(role) is None:
                notes.append(f"input.columns.{role}: no such column in the log; not used")
    return ColumnMapping(out, notes)


def _unfilled(role: str, present: Sequence[str], shown: str, recognise: bool) -> str:
    what = ("an amount (input.columns.amount), or a quantity and a unit price (input.columns.quantity and "
            "input.columns.unit_price)" if role == C.ROLE_AMOUNT else f"the {role.replace('_', ' ')}")
    tried = f"; names recognised: {', '.join(KNOWN_NAMES[role][:6])}, ..." if recognise else ""
    return (f"input.columns.{role}: no column for {what} in the log{tried} (columns found: {shown}); "
            f"name it with --set input.columns.{role}=COLUMN")
