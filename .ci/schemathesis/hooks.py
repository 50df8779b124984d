"""orderflow's additions to schemathesis, loaded through SCHEMATHESIS_HOOKS by ./run.

A hook that makes schema-valid orders name SKUs the catalog lists, so that orders are really
placed (and then read, cancelled, shipped through the document's links) instead of refused
as unknown SKUs; requests meant to be invalid are left alone.

One check, in place of the built-in `positive_data_acceptance`: it runs the built-in check
and lets through only the refusals no document can rule out, because they depend on what the
server holds rather than on the request's shape. Each one names the operation, the field and
the server's sentence, so a length, pattern or range that drifts from the document still
fails the run.
"""

import json
import os
import re
import urllib.request

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance as builtin

# (method, path template, field, how the server's message starts) of a 422 that a
# schema-valid request can get.
STATE_DEPENDENT = [
    # A SKU the pattern allows but the catalog does not list, twice in one order, or in
    # another currency than the order's other lines.
    ("POST", "/api/orders", r"lines\[\d+\]\.sku", ("unknown SKU", "appears on an earlier line", "is priced in")),
    # Cursors are opaque: only one this server gave is one it can go on from.
    ("GET", "/api/orders", r"cursor", ("is not a next_cursor",)),
    ("GET", "/api/events", r"cursor", ("is not a cursor",)),
    # Two parameters that each follow the document but not together.
    ("GET", "/api/events", r"until", ("must be after since",)),
    ("GET", "/api/analytics/summary", r"until", ("must not be before since",)),
    ("GET", "/api/orders/{id}", r"as_of", ("use either as_of or at_version",)),
]


def explained(case, response) -> bool:
    if response.status_code != 422:
        return False
    try:
        errors = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    method, path = case.method.upper(), case.operation.path
    rules = [(f, m) for (rm, rp, f, m) in STATE_DEPENDENT if rm == method and rp == path]
    return bool(errors) and all(
        any(re.fullmatch(field, e.get("field", "")) and e.get("message", "").startswith(starts) for field, starts in rules)
        for e in errors
    )


@schemathesis.check
def positive_data_acceptance_given_state(ctx, response, case):
    try:
        return builtin(ctx, response, case)
    except RejectedPositiveData:
        if explained(case, response):
            return None
        raise


_catalog: list[str] | None = None


def catalog() -> list[str]:
    global _catalog
    if _catalog is None:
        with urllib.request.urlopen(os.environ["ORDERFLOW_BASE"] + "/api/catalog", timeout=30) as answer:
            _catalog = [item["sku"] for item in json.load(answer)]
    return _catalog


@schemathesis.hook
def map_case(context, case):
    if case.method.upper() != "POST" or case.operation.path != "/api/orders":
        return case
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    lines = case.body.get("lines") if isinstance(case.body, dict) else None
    skus = catalog()
    if not isinstance(lines, list) or not 0 < len(lines) <= len(skus):
        return case
    if not all(isinstance(line, dict) and isinstance(line.get("sku"), str) for line in lines):
        return case
    # Distinct listed SKUs, starting where the drawn one points, so draws still differ.
    start = len(lines[0]["sku"])
    for i, line in enumerate(lines):
        line["sku"] = skus[(start + i) % len(skus)]
    return case
