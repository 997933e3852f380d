"""Readers on small files the tests write, and the error for every kind of bad input."""

import gzip
import io
import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distrec.data.dataset import prepare, write_prepared
from distrec.data.errors import DataFormatError
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def prepare_to(raw, tmp_path, config=PrepareConfig(split="none")):
    tables, meta = prepare(raw, config, "test")
    return write_prepared(tables, meta, tmp_path / "prepared")


# --- MovieLens -------------------------------------------------------------------------------------


def ml100k(root, data="1\t10\t5\t100\n2\t10\t3\t200\n2\t20\t4\t300\n"):
    write(root / "u.data", data)
    write(root / "u.genre", "unknown|0\nAction|1\nComedy|2\n\n")
    write(
        root / "u.item",
        "10|Film A (1990)|01-Jan-1990||url|0|1|1\n20|Film B (1991)|01-Jan-1991||url|0|0|1\n30|Unrated (1992)|x||url|1|0|0\n",
        "latin-1",
    )
    write(root / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return root


def test_ml_100k_small(tmp_path):
    raw = read_source("ml-100k", ml100k(tmp_path / "ml"))
    ds = prepare_to(raw, tmp_path)
    train = ds.table("train").to_pydict()
    assert train["user_id"] == [0, 1, 1] and train["item_id"] == [0, 0, 1]
    assert train["rating"] == [5.0, 3.0, 4.0] and train["timestamp"] == [100, 200, 300]
    attrs = ds.table("item_attributes").to_pydict()
    assert attrs["categories"] == [[1, 2], [2]]  # Action+Comedy, Comedy
    assert ds.table("item_map").column("original").to_pylist() == [10, 20]
    assert any("1 of 3 rows" in n for n in ds.metadata["notes"])  # the unrated film is reported, not dropped silently


def test_ml_100k_unknown_item_is_an_error_with_its_line(tmp_path):
    root = ml100k(tmp_path / "ml", "1\t10\t5\t100\n2\t99\t3\t200\n")
    with pytest.raises(DataFormatError, match=r"u\.data:2: item 99 is not listed in u\.item"):
        read_source("ml-100k", root)


def test_ml_1m_ratings_dat(tmp_path):
    root = tmp_path / "ml1m"
    write(root / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        root / "movies.dat",
        "1193::One Flew (1975)::Drama\n661::James (1996)::Animation|Children's|Musical\n",
        "latin-1",
    )
    ds = prepare_to(read_source("ml-1m", root), tmp_path)
    t = ds.table("train").to_pydict()
    assert t["rating"] == [5.0, 3.0, 4.0] and t["timestamp"] == [978300760, 978302109, 978298413]
    assert ds.table("item_map").column("original").to_pylist() == [661, 1193]
    assert ds.info()["sequences"] == 2


def test_wrong_separator_is_named(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1,661,3,978302109\n")
    with pytest.raises(
        DataFormatError,
        match=r"ratings\.dat:2: wrong field count: expected 4 fields separated by '::', found 1.*splits into 4 fields on ','",
    ):
        read_source("ml-1m", tmp_path)


def test_non_numeric_id_names_line_and_column(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::abc::3::978302109\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:2:4: non-numeric item: 'abc'"):
        read_source("ml-1m", tmp_path)


def test_empty_file(tmp_path):
    write(tmp_path / "ratings.dat", "")
    with pytest.raises(DataFormatError, match=r"ratings\.dat: file is empty"):
        read_source("ml-1m", tmp_path)


def test_wrong_encoding_names_line_and_byte(tmp_path):
    write(tmp_path / "ratings.dat", b"1::1193::5::978300760\n1::66\xe9::3::1\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:2:6: not valid utf-8 text \(byte 0xe9\)"):
        read_source("ml-1m", tmp_path)


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(b"".join(b"%d::%d\n" % (u, i) for u in range(1, 200) for i in range(1, 50)))
    write(tmp_path / "ratings_user_movie_only.dat.gz", blob[: len(blob) // 2])
    with pytest.raises(
        DataFormatError, match=r"ratings_user_movie_only\.dat\.gz: corrupt or truncated gzip stream after line \d+"
    ):
        read_source("ml-1m", tmp_path)


def test_skip_bad_lines_reports_count_and_reasons(tmp_path):
    write(tmp_path / "ratings.dat", "1::1::5::1\n1::x::3::2\n2::1::4\n\n2::2::4::3\n")
    raw = read_source("ml-1m", tmp_path, on_bad_lines="skip")
    assert raw.interactions.num_rows == 2
    report = raw.bad_lines.report()
    assert report["skipped"] == 3
    assert report["by_reason"] == {
        "non-numeric item: 'x' is not an integer": 1,
        "wrong field count: expected 4 fields separated by '::', found 3": 1,
        "blank line": 1,
    }
    assert report["examples"][0].startswith(str(tmp_path / "ratings.dat") + ":2:4:")


def test_ml_latest_csv(tmp_path):
    write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,964982224\n",
    )
    write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n1,"Toy Story, The (1995)",Adventure|Animation\n3,Heat (1995),(no genres listed)\n',
    )
    ds = prepare_to(read_source("ml-latest", tmp_path), tmp_path)
    assert ds.table("train").column("rating").to_pylist() == [4.0, 4.5, 2.5]
    attrs = ds.table("item_attributes").to_pydict()
    assert attrs["title"][0] == "Toy Story, The (1995)" and attrs["categories"] == [[0, 1], []]


def test_ml_latest_duplicate_header_line(tmp_path):
    write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\nuserId,movieId,rating,timestamp\n2,1,2.5,1\n",
    )
    with pytest.raises(DataFormatError, match=r"ratings\.csv:3: duplicate header line"):
        read_source("ml-latest", tmp_path)


def test_ml_latest_duplicate_column_and_missing_column(tmp_path):
    write(tmp_path / "ratings.csv", "userId,userId,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv:1: duplicate column name\(s\) \['userId'\]"):
        read_source("ml-latest", tmp_path)
    write(tmp_path / "ratings.csv", "userId;movieId;rating;timestamp\n1;1;4.0;1\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\).*wrong separator"):
        read_source("ml-latest", tmp_path)


def test_ml_latest_non_numeric_rating_located(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,good,2\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv:3:3: non-numeric rating: 'good'"):
        read_source("ml-latest", tmp_path)


# --- LightGCN, sequences, RecBole, table ---------------------------------------------------------------


def lightgcn(root, train="0 0 1\n1 1 2\n", test="0 2\n1 0\n"):
    write(root / "train.txt", train)
    write(root / "test.txt", test)
    write(root / "user_list.txt", "org_id remap_id\n501 0\n502 1\n")
    write(root / "item_list.txt", "org_id remap_id\n9001 0\n9002 1\n9003 2\n")
    return root


def test_lightgcn_small(tmp_path):
    ds = prepare_to(read_source("lightgcn", lightgcn(tmp_path / "g")), tmp_path, PrepareConfig())
    assert ds.table("train").column("item_id").to_pylist() == [0, 1, 1, 2]
    assert ds.table("test").column("item_id").to_pylist() == [2, 0]
    assert ds.table("user_map").column("original").to_pylist() == [501, 502]


def test_lightgcn_id_out_of_range(tmp_path):
    root = lightgcn(tmp_path / "g", train="0 0 1\n1 1 7\n")
    with pytest.raises(DataFormatError, match=r"train\.txt:2: item id 7 out of range: item_list\.txt has 3 ids"):
        read_source("lightgcn", root)


def test_sequence_order_and_leave_one_out(tmp_path):
    write(tmp_path / "Toy.txt", "1 5 6 7\n2 6 5\n")
    write(tmp_path / "Toy_item2attributes.json", json.dumps({"5": [0, 1], "6": [1], "7": [2], "8": [0]}))
    raw = read_source("sequence", tmp_path)
    ds = prepare_to(raw, tmp_path, PrepareConfig(split="loo"))
    test = ds.table("test").to_pydict()
    assert test["user_id"] == [0, 1] and test["item_id"] == [2, 0]  # last items: 7 -> id 2, 5 -> id 0
    seq = ds.table("sequences").to_pydict()
    assert seq["item_ids"] == [[0, 1, 2], [1, 0]]
    assert any("1 items without interactions" in n for n in ds.metadata["notes"])
    auto = prepare_to(
        read_source("sequence", tmp_path), tmp_path / "auto", PrepareConfig()
    )  # sequence files are made for leave-one-out
    assert auto.metadata["split_method"] == "loo" and auto.table("test").to_pydict() == test


def test_recbole_atomic_files(tmp_path):
    write(
        tmp_path / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t5\t10\nu1\ti2\t3\t20\nu2\ti1\t4\t15\n",
    )
    write(tmp_path / "toy.item", "item_id:token\tgenre:token_seq\ni1\tAction Drama\ni2\tDrama\n")
    write(tmp_path / "toy.user", "user_id:token\tage:float\tgender:token\nu1\t20\tF\nu2\t30\tM\n")
    ds = prepare_to(read_source("recbole", tmp_path), tmp_path)
    t = ds.table("train").to_pydict()
    assert t["timestamp"] == [10, 20, 15] and t["rating"] == [5.0, 3.0, 4.0]
    assert ds.metadata["category_names"] == ["Action", "Drama"]
    assert ds.table("item_attributes").column("categories").to_pylist() == [[0, 1], [1]]
    assert ds.table("user_attributes").column("gender").to_pylist() == ["F", "M"]


def test_recbole_bad_header_type(tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:tokn\nu1\ti1\n")
    with pytest.raises(DataFormatError, match=r"toy\.inter:1:2: header field 'item_id:tokn'"):
        read_source("recbole", tmp_path)


def test_table_parquet_and_csv_with_mapping(tmp_path):
    pq.write_table(
        pa.table({"uid": ["a", "b", "a"], "iid": [7, 8, 8], "score": [1.0, 2.0, 3.0]}), tmp_path / "t.parquet"
    )
    ds = prepare_to(
        read_source("table", tmp_path / "t.parquet", user_col="uid", item_col="iid", rating_col="score"), tmp_path
    )
    assert ds.table("user_map").column("original").to_pylist() == ["a", "b"]
    assert ds.table("train").column("rating").to_pylist() == [1.0, 2.0, 3.0]
    with pytest.raises(
        DataFormatError, match=r"missing column\(s\) \['user_id', 'item_id'\]; the file has \['uid', 'iid', 'score'\]"
    ):
        read_source("table", tmp_path / "t.parquet")
    write(tmp_path / "t.csv", "u,i,when\n3,7,100\n1,7,50\n")
    raw = read_source("table", tmp_path / "t.csv", user_col="u", item_col="i", timestamp_col="when")
    assert raw.interactions.column("user").to_pylist() == [3, 1] and raw.interactions.column(
        "timestamp"
    ).to_pylist() == [100, 50]


def test_unknown_reader_option_lists_valid_ones(tmp_path):
    with pytest.raises(
        ValueError, match=r"format 'table' has no option\(s\) \['user_column'\]; its options are .*user_col"
    ):
        read_source("table", tmp_path, user_column="x")


# --- images ------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08}[array.dtype.type]
    return struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_raw_and_gz_and_truncation(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9], np.uint8)
    for prefix in ("train", "t10k"):
        write(tmp_path / f"{prefix}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images)))
        write(tmp_path / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels))
    raw = read_source("idx", tmp_path)
    assert raw.labeled_images["train"].column("label").to_pylist() == [0, 1, 2, 3, 9]
    first = np.asarray(Image.open(io.BytesIO(raw.labeled_images["test"].column("image")[0].as_py())))
    assert np.array_equal(first, images[0])
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels)[:-2])
    with pytest.raises(
        DataFormatError, match=r"t10k-labels-idx1-ubyte: idx body has 3 bytes, header shape \(5,\) needs 5"
    ):
        read_source("idx", tmp_path)


def test_unreadable_image_named_and_skippable(tmp_path):
    folder = tmp_path / "posters"
    folder.mkdir()
    Image.new("RGB", (4, 6), (255, 0, 0)).save(folder / "1.jpg")
    write(folder / "2.jpg", b"not a jpeg")
    with pytest.raises(DataFormatError, match=r"posters/2\.jpg: unreadable image"):
        read_source("images", folder)
    raw = read_source("images", folder, on_bad_lines="skip")
    assert raw.item_images.column("item").to_pylist() == [1]
    assert raw.bad_lines.skipped == 1
    assert raw.item_images.column("width").to_pylist() == [4]


@pytest.mark.parametrize(
    "line,message",
    [
        ("3\t10\tNaN\t400\n", r"u\.data:4:6: rating 'NaN' is not a number"),
        ("3\t10\tinf\t400\n", r"u\.data:4:6: rating 'inf' is not a number"),
        ("3\t10\t7\t400\n", r"u\.data:4:6: rating '7' is outside the MovieLens scale 1-5 in steps of 1"),
        ("3\t10\t2.5\t400\n", r"u\.data:4:6: rating '2.5' is outside the MovieLens scale 1-5"),
        (
            "3\t99999999999999999999\t4\t400\n",
            r"u\.data:4:3: item '99999999999999999999' does not fit a 64-bit integer",
        ),
    ],
)
def test_ratings_that_are_not_numbers_or_off_the_scale_are_located(tmp_path, line, message):
    root = ml100k(tmp_path / "ml", data="1\t10\t5\t100\n2\t10\t3\t200\n2\t20\t4\t300\n" + line)
    with pytest.raises(DataFormatError, match=message):
        read_source("ml-100k", root)


def test_ml_latest_checks_half_stars_and_accepts_a_byte_order_mark(tmp_path):
    body = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,964982224\n"
    write(tmp_path / "ratings.csv", b"\xef\xbb\xbf" + body.encode())
    assert read_source("ml-latest", tmp_path).interactions.num_rows == 3
    for value, message in (
        ("NaN", r"ratings\.csv:5:3: rating 'NaN' is not a number"),
        ("4.2", r"ratings\.csv:5:3: rating '4\.2' is outside the MovieLens latest scale 0\.5-5 in steps of 0\.5"),
    ):
        write(tmp_path / "ratings.csv", b"\xef\xbb\xbf" + (body + f"2,3,{value},1\n").encode())
        with pytest.raises(DataFormatError, match=message):
            read_source("ml-latest", tmp_path)
    raw = read_source("ml-latest", tmp_path, on_bad_lines="skip")
    assert raw.interactions.num_rows == 3 and raw.bad_lines.skipped == 1


def test_a_byte_order_mark_before_the_first_line_is_accepted(tmp_path):
    root = ml100k(tmp_path / "ml")
    write(root / "u.data", b"\xef\xbb\xbf" + (root / "u.data").read_bytes())
    assert read_source("ml-100k", root).interactions.num_rows == 3


def test_a_user_on_two_lines_of_a_sequence_file_is_an_error_naming_both(tmp_path):
    path = write(tmp_path / "Seq.txt", "1 5 6 7\n2 5 8\n1 9\n")
    with pytest.raises(
        DataFormatError,
        match=r"Seq\.txt:3: user 1 is listed again \(first on line 1\); a sequence file has one line per user",
    ):
        read_source("sequence", path)
    raw = read_source("sequence", path, on_bad_lines="skip")
    assert raw.interactions.num_rows == 5 and raw.bad_lines.skipped == 1  # the later line is dropped, and said so
    pairs = write(
        tmp_path / "pairs" / "Pairs.txt", "1 5\n2 5\n1 9\n"
    )  # user-item pairs: a user on many lines is the format
    assert read_source("sequence", pairs).interactions.num_rows == 3


def test_sequence_items_missing_from_item2attributes_are_reported(tmp_path):
    path = write(tmp_path / "Toys.txt", "1 5 6\n2 5 7\n")
    write(tmp_path / "Toys_item2attributes.json", json.dumps({"5": [0], "6": [1]}))
    raw = read_source("sequence", path)
    assert any(
        "Toys.txt: 1 items have no entry in Toys_item2attributes.json (first: item 7 on line 2)" in n for n in raw.notes
    )
