"""Loaders for public interaction logs; each returns time-sorted ``Interactions``.

Every rating, review or purchase counts as one implicit interaction (the rating value is ignored).
Malformed input raises ``DataFormatError`` naming the file, the 1-based line and what was expected.
"""
from __future__ import annotations

import csv
import json
import warnings
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import DataFormatError
from .interactions import Interactions
from .reading import KeyIndex, chunks, concat, open_text

FORMATS = ("movielens", "amazon", "yelp", "csv", "online-retail", "synthetic")

_ML_DTYPE = np.dtype([("user", "i8"), ("item", "i8"), ("rating", "f8"), ("time", "i8")])
_ML_HEADER = "userId,movieId,rating,timestamp"
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


# ----------------------------------------------------------------------------------------- MovieLens
def load_movielens(path) -> Interactions:
    """MovieLens ratings: ``u.data`` (tab-separated), ``ratings.dat`` (``::``-separated) or ``ratings.csv``
    (comma-separated with header ``userId,movieId,rating,timestamp``); optionally gzipped.

    The layout is detected from the first line. Parsing is vectorised in chunks of lines, so a
    20M-line file needs a few hundred MB besides the result.
    """
    path = Path(path)
    user_parts, item_parts, time_parts = [], [], []
    with open_text(path) as f:
        first = f.readline()
        sep, expected, header = _movielens_layout(path, first)
        lineno = 1 if header else 0  # lines consumed before the next chunk
        lines = f if header else _prepend(first, f)
        for chunk in chunks(lines):
            if sep == "::":
                chunk = [line.replace("::", "\t") for line in chunk]  # loadtxt wants a 1-char delimiter
            rows = _parse_lines(chunk, "\t" if sep == "::" else sep, path, lineno + 1, expected)
            user_parts.append(rows["user"])
            item_parts.append(rows["item"])
            time_parts.append(rows["time"])
            lineno += len(chunk)
    user, item, time = concat(user_parts), concat(item_parts), concat(time_parts)
    if time.size == 0:
        raise DataFormatError(path, lineno + 1, "at least one rating line")
    # Integer keys: factorise with np.unique (vectorised) instead of a dict.
    user_keys, user_codes = np.unique(user, return_inverse=True)
    item_keys, item_codes = np.unique(item, return_inverse=True)
    return Interactions.from_codes(user_codes, item_codes, time, user_keys, item_keys, str(path))


def _movielens_layout(path, first):
    if "::" in first:
        return "::", "4 '::'-separated integer fields user::item::rating::time (ratings.dat)", False
    if "\t" in first:
        return "\t", "4 tab-separated fields user, item, rating, time (u.data)", False
    if "," in first:
        expected = "4 comma-separated fields userId,movieId,rating,timestamp (ratings.csv)"
        if first.strip() == _ML_HEADER:
            return ",", expected, True
        if first[:1].isdigit():
            return ",", expected, False
        raise DataFormatError(path, 1, f"the header {_ML_HEADER!r}", first)
    raise DataFormatError(path, 1, "a MovieLens ratings line (u.data: tabs, ratings.dat: '::', "
                          "ratings.csv: commas)", first)


def _prepend(first, rest):
    yield first
    yield from rest


def _parse_lines(lines, sep, path, first_lineno, expected):
    """Parse a chunk with np.loadtxt; on failure, bisect to the first bad line and report it."""
    def parse(block):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an all-blank block is not an error
            return np.loadtxt(block, delimiter=sep, dtype=_ML_DTYPE, comments=None, ndmin=1)
    try:
        return parse(lines)
    except ValueError:
        lo, hi = 0, len(lines)  # invariant: the first bad line is in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                parse(lines[lo:mid])
                lo = mid
            except ValueError:
                hi = mid
        raise DataFormatError(path, first_lineno + lo, expected, lines[lo]) from None


# -------------------------------------------------------------------------------- JSON lines sources
def load_amazon(path) -> Interactions:
    """Amazon review JSON lines (``.json`` or ``.json.gz``) with ``reviewerID``, ``asin``, ``unixReviewTime``."""
    def record(obj):
        return str(obj["reviewerID"]), str(obj["asin"]), int(obj["unixReviewTime"])
    return _load_json_lines(path, record, "a JSON object with reviewerID, asin and integer unixReviewTime")


def load_yelp(path) -> Interactions:
    """Yelp Open Dataset reviews (JSON lines) with ``user_id``, ``business_id`` and ``date`` as
    ``"%Y-%m-%d %H:%M:%S"`` (read as UTC; a bare ``"%Y-%m-%d"`` from older releases is accepted too)."""
    def record(obj):
        return str(obj["user_id"]), str(obj["business_id"]), _yelp_time(obj["date"])
    return _load_json_lines(path, record,
                            "a JSON object with user_id, business_id and date '%Y-%m-%d %H:%M:%S'")


def _yelp_time(date: str) -> int:
    # fromisoformat is ~20x faster than strptime; the length/separator check keeps the format strict.
    if not (len(date) == 19 and date[10] == " " or len(date) == 10):
        raise ValueError(date)
    return (datetime.fromisoformat(date) - _EPOCH) // _SECOND


def _load_json_lines(path, record, expected) -> Interactions:
    path = Path(path)

    def records(f):
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield record(json.loads(line))
            except (ValueError, KeyError, TypeError):
                raise DataFormatError(path, lineno, expected, line) from None

    with open_text(path) as f:
        return _collect(records(f), path)


# -------------------------------------------------------------------------------------- generic CSV
def load_csv(path, user_col, item_col, time_col, time_format=None, sep=None) -> Interactions:
    """Any delimited text file with a header row. ``time_col`` holds unix seconds (integer or decimal) or,
    with ``time_format``, a ``datetime.strptime`` string (read as UTC unless it carries a zone).

    ``sep``: the field delimiter; None detects a tab or a comma from the header. A typed header
    (``user_id:token``, ``timestamp:float``, as some public dumps ship them) matches a column by its name
    before the colon too, so ``user_col="user_id"`` finds ``user_id:token``.
    """
    path = Path(path)
    with open_text(path) as f:
        first = f.readline()
        if not first.strip():
            raise DataFormatError(path, 1, f"a header row with columns {user_col}, {item_col}, {time_col}")
        if sep is None:
            sep = "\t" if "\t" in first else ","
        header = next(csv.reader([first], delimiter=sep))
        reader = csv.reader(f, delimiter=sep)
        cols = [_column(header, name, path, sep) for name in (user_col, item_col, time_col)]
        ucol, icol, tcol = cols
        width = max(cols) + 1
        parse_time = _time_parser(time_format)
        time_what = f"a time matching {time_format!r}" if time_format else "a unix time in seconds"

        def records():
            cache = {}  # many rows share a time string
            for row in reader:
                if not row:
                    continue
                line = reader.line_num + 1  # the header was read before the reader
                if len(row) < width:
                    raise DataFormatError(path, line, f"at least {width} fields", sep.join(row))
                t = row[tcol]
                sec = cache.get(t)
                if sec is None:
                    try:
                        sec = cache[t] = parse_time(t)
                    except ValueError:
                        raise DataFormatError(path, line, f"{time_what} in column {time_col!r}",
                                              sep.join(row)) from None
                yield row[ucol], row[icol], sec
        return _collect(records(), path)


def _column(header: list, name: str, path, sep: str) -> int:
    """Index of ``name`` in ``header``, matching ``name:type`` columns by their name too."""
    if name in header:
        return header.index(name)
    bare = [h.split(":", 1)[0] for h in header]
    if name in bare:
        return bare.index(name)
    raise DataFormatError(path, 1, f"a header row with a column {name!r}", sep.join(header))


def _time_parser(time_format):
    if time_format is None:
        def parse(s):
            try:
                return int(s)
            except ValueError:
                return int(float(s))
        return parse

    def parse_formatted(s):
        dt = datetime.strptime(s, time_format)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp())
    return parse_formatted


def _collect(records, path) -> Interactions:
    """Factorise an iterator of (user key, item key, unix time) in chunks into ``Interactions``."""
    users, items = KeyIndex(), KeyIndex()
    user_parts, item_parts, time_parts = [], [], []
    for chunk in chunks(records):
        u, i, t = zip(*chunk)
        user_parts.append(users.codes(u))
        item_parts.append(items.codes(i))
        time_parts.append(np.array(t, dtype=np.int64))
    if not time_parts:
        raise DataFormatError(path, None, "at least one interaction")
    return Interactions.from_codes(concat(user_parts), concat(item_parts), concat(time_parts),
                                   users.keys(), items.keys(), str(path))


# ---------------------------------------------------------------------------- embedded Online Retail
def load_online_retail(path=None) -> Interactions:
    """The UCI "Online Retail" purchase stream shipped with pyscall, cleaned for implicit feedback.

    Every purchase line with a customer id of a UK online gift shop, 2010-12-01 to 2011-12-09
    (406,829 rows, 4,372 customers, 3,684 stock codes). Cleaning: drop cancellations (invoice starting
    with ``C`` or quantity <= 0; 397,924 rows remain), then duplicate (customer, stock code, invoice)
    rows: 387,875 purchases by 4,339 customers of 3,665 products remain (266,802 distinct pairs).
    Items are stock codes (strings such as ``85123A``).

    Source: UCI Machine Learning Repository, "Online Retail" (dataset 352), donated by Dr Daqing Chen,
    London South Bank University; licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
    Reference: D. Chen, S. L. Sain, K. Guo (2012), "Data mining for the online retail industry: A case
    study of RFM model-based customer segmentation using data mining", Journal of Database Marketing
    and Customer Strategy Management 19(3). The packaged file is a re-encoding (unix time, customer,
    stock code, invoice, quantity) of the original spreadsheet.

    ``path``: another file in the same layout (columns timestamp,user_id,item_id,invoice,quantity).
    """
    if path is None:
        with resources.as_file(resources.files("pyscall.app.data") / "online_retail.csv.gz") as packaged:
            return _read_online_retail(packaged, "UCI Online Retail (packaged, CC BY 4.0)")
    return _read_online_retail(Path(path), str(path))


def _read_online_retail(path, source) -> Interactions:
    header = "timestamp,user_id,item_id,invoice,quantity"
    users, items, invoices = KeyIndex(), KeyIndex(), KeyIndex()
    rows = []  # (time, user, item, invoice) of purchases, keys as strings
    with open_text(path) as f:
        reader = csv.reader(f)
        if ",".join(next(reader, [])) != header:
            raise DataFormatError(path, 1, f"the header {header!r}")
        for row in reader:
            if len(row) != 5:
                raise DataFormatError(path, reader.line_num, "5 fields " + header, ",".join(row))
            time, user, item, invoice, quantity = row
            try:
                if invoice.startswith("C") or int(quantity) <= 0:
                    continue
                rows.append((int(time), user, item, invoice))
            except ValueError:
                raise DataFormatError(path, reader.line_num, "integer timestamp and quantity",
                                      ",".join(row)) from None
    if not rows:
        raise DataFormatError(path, None, "at least one purchase")
    time, user, item, invoice = zip(*rows)
    u, i, v = users.codes(user), items.codes(item), invoices.codes(invoice)
    # Keep the first of each (user, item, invoice): one basket line per product.
    _, first = np.unique((u * len(items) + i) * len(invoices) + v, return_index=True)
    keep = np.sort(first)
    return Interactions.from_codes(u[keep], i[keep], np.array(time, dtype=np.int64)[keep],
                                   users.keys(), items.keys(), source)


# ------------------------------------------------------------------------------------- dispatcher
def load(path_or_name, format=None, **kw) -> Interactions:
    """Load by format name (one of ``FORMATS``) or, with ``format=None``, by what the path looks like.

    ``"online-retail"`` is the packaged dataset; ``"synthetic"`` calls ``synthetic_stream(**kw)``;
    ``"csv"`` needs ``user_col``, ``item_col``, ``time_col`` (optional ``time_format``, ``sep``) in ``kw``;
    ``*.tsv`` and ``*.inter`` files are detected as ``"csv"``.
    """
    if format is None:
        format = detect_format(path_or_name)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "synthetic":
        from .synthetic import synthetic_stream
        return synthetic_stream(**kw)
    if format == "online-retail":
        return load_online_retail(None if path_or_name in (None, "online-retail") else path_or_name)
    if format == "csv":
        return load_csv(path_or_name, **kw)
    loader = {"movielens": load_movielens, "amazon": load_amazon, "yelp": load_yelp}[format]
    if kw:
        raise TypeError(f"load(format={format!r}) takes no keyword arguments, got {sorted(kw)}")
    return loader(path_or_name)


def detect_format(path_or_name) -> str:
    """The format ``load`` reads ``path_or_name`` as when none is named (one of ``FORMATS``)."""
    if path_or_name in ("online-retail", "synthetic"):
        return path_or_name
    path = Path(path_or_name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (or pass one of the names 'online-retail', 'synthetic')")
    name = path.name.removesuffix(".gz")
    if name == "u.data" or name.endswith(".dat"):
        return "movielens"
    with open_text(path) as f:
        first = f.readline()
    if name.endswith(".json"):
        if '"reviewerID"' in first:
            return "amazon"
        if '"business_id"' in first:
            return "yelp"
    if name.endswith((".tsv", ".inter")):
        return "csv"
    if name.endswith(".csv"):
        if first.strip() == _ML_HEADER:
            return "movielens"
        if first.strip() == "timestamp,user_id,item_id,invoice,quantity":
            return "online-retail"
        return "csv"
    raise ValueError(f"{path}: cannot tell the format; pass format= one of {FORMATS}")

