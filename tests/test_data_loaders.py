"""Loaders on small fixture files written here, malformed lines, and the packaged Online Retail stream."""
import gzip
import json

import numpy as np
import pytest

from pyscall.app.data import (DataFormatError, Interactions, load, load_amazon, load_csv, load_movielens,
                          load_online_retail, load_yelp)
from pyscall.app.data import reading

# (user, item, time) in file order; sorted by time (stable) the users are 7, 3, 9 and items 20, 10, 30.
ROWS = [(3, 10, 200), (7, 20, 100), (3, 20, 300), (9, 30, 200), (7, 10, 300)]
EXPECTED_USER = [0, 1, 2, 1, 0]  # time order: (7,20,100) (3,10,200) (9,30,200) (3,20,300) (7,10,300)
EXPECTED_ITEM = [0, 1, 2, 0, 1]
EXPECTED_TIME = [100, 200, 200, 300, 300]


def check_rows(inter: Interactions, user_keys=("7", "3", "9"), item_keys=("20", "10", "30")):
    assert inter.user.dtype == inter.item.dtype == inter.time.dtype == np.int64
    assert inter.user.tolist() == EXPECTED_USER
    assert inter.item.tolist() == EXPECTED_ITEM
    assert inter.time.tolist() == EXPECTED_TIME
    assert (inter.n_users, inter.n_items) == (3, 3)
    assert inter.user_keys.tolist() == list(user_keys)
    assert inter.item_keys.tolist() == list(item_keys)


def write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_movielens_three_layouts(tmp_path):
    udata = "".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in ROWS)
    dat = "".join(f"{u}::{i}::5::{t}\n" for u, i, t in ROWS)
    csv = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},3.5,{t}\n" for u, i, t in ROWS)
    check_rows(load_movielens(write(tmp_path / "u.data", udata)))
    check_rows(load_movielens(write(tmp_path / "ratings.dat", dat)))
    check_rows(load_movielens(write(tmp_path / "ratings.csv", csv)))
    check_rows(load_movielens(write(tmp_path / "ratings.csv.gz", csv, gz=True)))
    check_rows(load(tmp_path / "ratings.csv"))  # detected as MovieLens from the header
    check_rows(load(tmp_path / "u.data"))


@pytest.mark.parametrize("bad, expected", [
    ("1,2,3.5\n", "4 comma-separated"),
    ("1,x,3.5,100\n", "4 comma-separated"),
    ("1,2,3.5,100,7\n", "4 comma-separated"),
])
def test_movielens_malformed_line_across_chunks(tmp_path, monkeypatch, bad, expected):
    monkeypatch.setattr(reading, "CHUNK_LINES", 3)  # the bad line sits in the third chunk
    lines = ["userId,movieId,rating,timestamp\n"] + [f"{k},{k},4.0,{k}\n" for k in range(1, 9)]
    lines.insert(7, bad)  # file line 8
    path = write(tmp_path / "ratings.csv", "".join(lines))
    with pytest.raises(DataFormatError, match=expected) as info:
        load_movielens(path)
    assert str(info.value).startswith(f"{path}:8: expected")
    assert info.value.line == 8 and bad.strip() in str(info.value)
    assert isinstance(info.value, ValueError)


def test_movielens_bad_header_and_empty(tmp_path):
    with pytest.raises(DataFormatError, match=r"ratings.csv:1: expected the header"):
        load_movielens(write(tmp_path / "ratings.csv", "user,movie,rating,ts\n1,2,3,4\n"))
    with pytest.raises(DataFormatError, match=r"at least one rating"):
        load_movielens(write(tmp_path / "e.csv", "userId,movieId,rating,timestamp\n"))
    with pytest.raises(DataFormatError, match=r"u.data:3: expected 4 tab-separated"):
        load_movielens(write(tmp_path / "u.data", "1\t2\t3\t4\n5\t6\t7\t8\n5\t6\t7\n"))


def test_amazon_json_lines(tmp_path):
    text = "".join(json.dumps({"reviewerID": f"U{u}", "asin": f"B{i}", "overall": 5.0, "unixReviewTime": t,
                               "reviewText": "fine"}) + "\n" for u, i, t in ROWS)
    for name, gz in (("reviews.json", False), ("reviews.json.gz", True)):
        inter = load_amazon(write(tmp_path / name, text, gz))
        check_rows(inter, ("U7", "U3", "U9"), ("B20", "B10", "B30"))
        check_rows(load(tmp_path / name), ("U7", "U3", "U9"), ("B20", "B10", "B30"))


@pytest.mark.parametrize("line", ['{"reviewerID": "U1", "asin": "B1"', '{"reviewerID": "U1", "asin": "B1"}',
                                  '{"reviewerID": "U1", "asin": "B1", "unixReviewTime": "soon"}'])
def test_amazon_malformed(tmp_path, line):
    good = json.dumps({"reviewerID": "U0", "asin": "B0", "unixReviewTime": 5})
    path = write(tmp_path / "a.json", f"{good}\n\n{line}\n")
    with pytest.raises(DataFormatError, match=r"a.json:3: expected a JSON object with reviewerID"):
        load_amazon(path)


def test_yelp_json_lines(tmp_path):
    def date(t):  # 100 s -> 2020-01-01 00:01:40
        return f"2020-01-01 00:{t // 60:02d}:{t % 60:02d}"
    text = "".join(json.dumps({"user_id": f"u{u}", "business_id": f"b{i}", "stars": 4, "date": date(t)}) + "\n"
                   for u, i, t in ROWS)
    inter = load_yelp(write(tmp_path / "review.json", text))
    assert inter.time[0] == 1577836800 + 100
    shifted = Interactions(inter.user, inter.item, inter.time - 1577836800, inter.n_users, inter.n_items,
                           inter.user_keys, inter.item_keys, inter.source)
    check_rows(shifted, ("u7", "u3", "u9"), ("b20", "b10", "b30"))
    assert load(tmp_path / "review.json").time.tolist() == inter.time.tolist()
    bad = write(tmp_path / "bad.json", text + json.dumps({"user_id": "u", "business_id": "b",
                                                          "date": "01/02/2020"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.json:6: expected .*date '%Y-%m-%d %H:%M:%S'"):
        load_yelp(bad)
    day_only = write(tmp_path / "old.json", json.dumps({"user_id": "u", "business_id": "b", "date": "2020-01-02"}))
    assert load_yelp(day_only).time.tolist() == [1577836800 + 86400]  # older releases: date only, midnight


def test_generic_csv(tmp_path):
    text = "when,item,who,extra\n" + "".join(f"{t},i{i},u{u},x\n" for u, i, t in ROWS)
    check_rows(load_csv(write(tmp_path / "log.csv", text), "who", "item", "when"),
               ("u7", "u3", "u9"), ("i20", "i10", "i30"))
    check_rows(load(tmp_path / "log.csv", user_col="who", item_col="item", time_col="when"),
               ("u7", "u3", "u9"), ("i20", "i10", "i30"))
    dated = "user,item,day\n" + "".join(f"{u},{i},1970-01-01T00:{t // 60:02d}:{t % 60:02d}\n" for u, i, t in ROWS)
    inter = load_csv(write(tmp_path / "d.csv", dated), "user", "item", "day", time_format="%Y-%m-%dT%H:%M:%S")
    check_rows(inter)


def test_generic_csv_errors(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,time\n1,2,3\n1,2,soon\n")
    with pytest.raises(DataFormatError, match=r"log.csv:3: expected a unix time in seconds in column 'time'"):
        load_csv(path, "user", "item", "time")
    with pytest.raises(DataFormatError, match=r"log.csv:1: expected a header row with a column 'ts'"):
        load_csv(path, "user", "item", "ts")
    short = write(tmp_path / "short.csv", "user,item,time\n1,2,3\n4,5\n")
    with pytest.raises(DataFormatError, match=r"short.csv:3: expected at least 3 fields"):
        load_csv(short, "user", "item", "time")


def test_online_retail_cleaning_rules(tmp_path):
    text = ("timestamp,user_id,item_id,invoice,quantity\n"
            "100,17850,85123A,536365,6\n"
            "100,17850,85123A,536365,2\n"   # duplicate (user, item, invoice): dropped
            "110,17850,71053,C536379,-1\n"  # cancellation: dropped
            "120,13047,71053,536380,0\n"    # quantity <= 0: dropped
            "130,13047,85123A,536381,1\n"
            "140,17850,85123A,536390,3\n")  # same pair, new invoice: kept
    inter = load_online_retail(write(tmp_path / "or.csv.gz", text, gz=True))
    assert inter.user.tolist() == [0, 1, 0] and inter.item.tolist() == [0, 0, 0]
    assert inter.time.tolist() == [100, 130, 140]
    assert inter.user_keys.tolist() == ["17850", "13047"] and inter.item_keys.tolist() == ["85123A"]
    bad = write(tmp_path / "bad.csv", "timestamp,user_id,item_id,invoice,quantity\n100,1,2,3,many\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:2: expected integer timestamp and quantity"):
        load_online_retail(bad)


def test_packaged_online_retail_counts():
    inter = load_online_retail()
    # 406,829 rows / 4,372 customers before cleaning; 397,924 rows without cancellations; then
    # duplicate (customer, stock code, invoice) rows removed:
    assert len(inter) == 387_875
    assert (inter.n_users, inter.n_items) == (4_339, 3_665)
    assert np.unique(inter.user * inter.n_items + inter.item).size == 266_802
    assert np.all(np.diff(inter.time) >= 0)
    assert inter.time[0] == 1291191960 and inter.user_keys[0] == "17850" and inter.item_keys[0] == "85123A"
    # first-appearance ids: each new id is exactly one more than the largest id seen before
    for ids in (inter.user, inter.item):
        running = np.maximum.accumulate(ids)
        assert ids[0] == 0 and np.all(np.diff(running) <= 1)
    assert load("online-retail").n_users == inter.n_users


def test_dispatcher_errors(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        load("x", format="parquet")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load(write(tmp_path / "data.txt", "1 2 3\n"))


def test_tab_separated_file_with_a_typed_header(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + \
        "".join(f"{u}\t{i}\t4\t{t}.0\n" for u, i, t in ROWS)
    path = write(tmp_path / "log.inter", text)
    check_rows(load(path, user_col="user_id", item_col="item_id", time_col="timestamp"))  # detected: csv
    check_rows(load_csv(write(tmp_path / "log.tsv", text), "user_id:token", "item_id", "timestamp:float"))
    check_rows(load_csv(write(tmp_path / "semi.txt", text.replace("\t", ";")), "user_id", "item_id", "timestamp",
                        sep=";"))
    with pytest.raises(DataFormatError, match=r"log.inter:1: expected a header row with a column 'when'"):
        load_csv(path, "user_id", "item_id", "when")
    bad = write(tmp_path / "bad.tsv", "u\ti\tt\n1\t2\t3\n1\t2\tsoon\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:3: expected a unix time"):
        load_csv(bad, "u", "i", "t")
