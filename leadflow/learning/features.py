"""Fields as one-hot groups: numbers in bins, text in categories, plus missing and "other".

Each field's rows get one group code; groups are mutually exclusive and cover every row, so
a set of groups is exactly one rule (``ruletext``) and a coefficient per group is exactly
points per rule. Rare categories share one "other" group (a rule per rare value would be
noise); placeholders ("Select", "N/A") are the missing group, their spellings kept so the
rule written for it matches the same rows in the database.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse

from leadflow.learning.values import is_placeholder, to_bool, to_number

GroupKind = Literal["missing", "bin", "category", "other", "true", "false"]
Encoding = Literal["number", "text", "email", "presence", "bool"]
Codes = npt.NDArray[np.int32]

IDENTIFIERS = frozenset({"first_name", "last_name", "company", "phone"})  # only set or not
MAX_BINS = 10
MAX_CATEGORIES = 60


@dataclass(frozen=True)
class Group:
    """One value group of a field: a bin ``[low, high)``, a category, missing or the rest."""

    kind: GroupKind
    value: str | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Encoded:
    """A field's groups and each row's group code; ``placeholders`` are the missing spellings
    seen (besides null and blank) and ``known`` the categories that are not "other"."""

    field: str
    encoding: Encoding
    groups: tuple[Group, ...]
    codes: Codes
    placeholders: tuple[str, ...] = ()
    known: tuple[str, ...] = ()

    def counts(self, rows: npt.NDArray[np.intp] | None = None) -> npt.NDArray[np.int64]:
        codes = self.codes if rows is None else self.codes[rows]
        return np.bincount(codes, minlength=len(self.groups)).astype(np.int64)


def min_group_rows(rows: int) -> int:
    """A category or bin needs this many rows to stand alone (else it is "other")."""
    return max(50, math.ceil(0.005 * rows))


def encode(field: str, kind: str, values: Sequence[Any], min_rows: int) -> Encoded | None:
    """The field's groups and codes; None when it has a single group (nothing to learn)."""
    if kind in ("int", "float"):
        encoded = _encode_number(field, numbers(values), min_rows)
    elif kind == "bool":
        encoded = _encode_bool(field, values)
    else:
        encoding: Encoding = (
            "email" if field == "email" else "presence" if field in IDENTIFIERS else "text"
        )
        encoded = _encode_text(field, encoding, texts(values), min_rows)
    return encoded if len(encoded.groups) > 1 else None


def numbers(values: Sequence[Any]) -> npt.NDArray[np.float64]:
    """Values as floats, NaN where missing; the fast path for columns that are numbers."""
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.array([to_number(v) for v in values], dtype=np.float64)
    array[~np.isfinite(array)] = np.nan
    return array


def texts(values: Sequence[Any]) -> list[str | None]:
    return [v if v is None or isinstance(v, str) else str(v) for v in values]


def _nice(value: float, integer: bool) -> float:
    """Two significant digits: edges people read, such as 50 or 1200, not 47.31."""
    if value == 0 or not math.isfinite(value):
        return 0.0
    rounded = round(value, 1 - math.floor(math.log10(abs(value))))
    return float(math.ceil(rounded)) if integer else float(rounded)


def bin_edges(present: npt.NDArray[np.float64], min_rows: int) -> list[float]:
    """Lower edges of bins 2..k: the distinct values when few, else rounded quantiles; a bin
    with fewer than ``min_rows`` rows is merged into its neighbour."""
    distinct = np.unique(present)
    integer = bool(np.all(distinct == np.round(distinct)))
    if len(distinct) <= MAX_BINS:
        candidates = [float(v) for v in distinct[1:]]
    else:
        qs = np.quantile(present, np.linspace(0, 1, MAX_BINS + 1)[1:-1])
        candidates = sorted({_nice(float(q), integer) for q in qs})
    edges = [e for e in candidates if e > distinct[0]]
    while edges:
        counts = np.bincount(np.searchsorted(edges, present, side="right"))
        counts = np.pad(counts, (0, len(edges) + 1 - len(counts)))
        small = int(np.argmin(counts))
        if counts[small] >= min_rows:
            break
        # drop the edge shared with the smaller neighbour
        if small == 0 or (small < len(edges) and counts[small + 1] < counts[small - 1]):
            edges.pop(small)
        else:
            edges.pop(small - 1)
    return edges


def _encode_number(field: str, array: npt.NDArray[np.float64], min_rows: int) -> Encoded:
    missing = np.isnan(array)
    present = array[~missing]
    edges = bin_edges(present, min_rows) if len(present) else []
    bounds: list[float | None] = [None, *edges, None]
    groups = [Group("bin", low=bounds[i], high=bounds[i + 1]) for i in range(len(edges) + 1)]
    found = np.searchsorted(np.array(edges, dtype=np.float64), array, side="right")
    codes: Codes = found.astype(np.int32)
    if not len(present):
        groups = []
    if missing.any():
        codes[missing] = len(groups)
        groups.append(Group("missing"))
    return Encoded(field, "number", tuple(groups), codes)


def _encode_bool(field: str, values: Sequence[Any]) -> Encoded:
    flags = [to_bool(v) for v in values]
    order: list[tuple[bool | None, Group]] = [
        (True, Group("true")),
        (False, Group("false")),
        (None, Group("missing")),
    ]
    seen = set(flags)
    kept = [(flag, group) for flag, group in order if flag in seen]
    lookup = {flag: code for code, (flag, _group) in enumerate(kept)}
    codes = np.fromiter((lookup[f] for f in flags), dtype=np.int32, count=len(flags))
    return Encoded(field, "bool", tuple(g for _f, g in kept), codes)


def _category_of(encoding: Encoding, text: str) -> str:
    """What a present value is grouped by: the text, or for an email its ``@domain``."""
    if encoding == "email":
        at = text.rfind("@")
        return text[at:] if at >= 0 else ""
    return text


def _encode_text(
    field: str, encoding: Encoding, values: list[str | None], min_rows: int
) -> Encoded:
    distinct = Counter(values)
    placeholders = sorted(
        v for v in distinct if v is not None and v.strip() != "" and is_placeholder(v)
    )
    missing_values = {None, *(v for v in distinct if v is not None and is_placeholder(v))}
    by_category: Counter[str] = Counter()
    if encoding != "presence":
        for value, count in distinct.items():
            if value not in missing_values:
                assert value is not None
                by_category[_category_of(encoding, value)] += count
    ranked = sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))
    known = sorted(c for c, n in ranked[:MAX_CATEGORIES] if n >= min_rows and c != "")
    groups = [Group("category", value=c) for c in known]
    other = len(groups)
    groups.append(Group("other"))
    groups.append(Group("missing"))
    index = {c: i for i, c in enumerate(known)}
    lookup = {
        value: other + 1
        if value in missing_values
        else index.get(_category_of(encoding, value), other)  # type: ignore[arg-type]
        for value in distinct
    }
    codes = np.fromiter((lookup[v] for v in values), dtype=np.int32, count=len(values))
    return _drop_empty(
        Encoded(field, encoding, tuple(groups), codes, tuple(placeholders), tuple(known))
    )


def _drop_empty(encoded: Encoded) -> Encoded:
    """Without the groups no row falls in (no "other" when every value is frequent)."""
    counts = encoded.counts()
    keep = [i for i, n in enumerate(counts) if n > 0]
    if len(keep) == len(encoded.groups):
        return encoded
    remap = np.full(len(encoded.groups), -1, dtype=np.int32)
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    groups = tuple(encoded.groups[i] for i in keep)
    return Encoded(
        encoded.field,
        encoded.encoding,
        groups,
        remap[encoded.codes],
        encoded.placeholders,
        encoded.known,
    )


def encode_all(
    columns: Mapping[str, Sequence[Any]], kinds: Mapping[str, str], rows: int
) -> list[Encoded]:
    """Every usable field, in name order; constant fields are left out."""
    min_rows = min_group_rows(rows)
    out = []
    for name, kind in kinds.items():
        encoded = encode(name, kind, columns[name], min_rows)
        if encoded is not None:
            out.append(encoded)
    return out


def one_hot(fields: Sequence[Encoded]) -> sparse.csr_matrix:
    """Rows x (all groups of all fields), one 1 per field per row: the model's matrix."""
    n = len(fields[0].codes)
    offsets = np.cumsum([0, *(len(f.groups) for f in fields)])
    indices = np.empty((n, len(fields)), dtype=np.int32)
    for j, f in enumerate(fields):
        indices[:, j] = f.codes + offsets[j]
    indptr = np.arange(0, n * len(fields) + 1, len(fields), dtype=np.int64)
    data = np.ones(n * len(fields), dtype=np.float64)
    return sparse.csr_matrix((data, indices.ravel(), indptr), shape=(n, int(offsets[-1])))
