"""Every reader on the real files in ../shared/data; counts must equal those in its README."""

import numpy as np
import pyarrow.compute as pc
import pytest

from distrec.data.dataset import prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source
from distrec.data.readers.images import read_idx_file
from distrec.data.streaming import decode_images

pytestmark = pytest.mark.real_data


def prepared(shared_data, tmp_path, fmt, rel, config=PrepareConfig(), **options):
    raw = read_source(fmt, shared_data / rel, **options)
    tables, meta = prepare(raw, config, fmt, options)
    return write_prepared(tables, meta, tmp_path / "out")


@pytest.mark.parametrize(
    "fmt, rel, users, items, interactions",
    [
        ("ml-100k", "ml-100k", 943, 1682, 100_000),
        ("ml-1m", "ml-1m", 6040, 3706, 1_000_209),
        ("lightgcn", "lightgcn/gowalla", 29_858, 40_981, 1_027_370),
        ("sequence", "sequential/s3rec/Beauty.txt", 22_363, None, 198_502),
        ("sequence", "sequential/s3rec/Sports_and_Outdoors.txt", 35_598, None, 296_337),
        ("sequence", "sequential/s3rec/Toys_and_Games.txt", 19_412, None, 167_597),
    ],
)
def test_interaction_counts_match_readme(shared_data, tmp_path, fmt, rel, users, items, interactions):
    info = prepared(shared_data, tmp_path, fmt, rel).info()
    assert info["users"] == users
    assert info["interactions"] == interactions
    assert sum(info["splits"].values()) == interactions
    if items is not None:
        assert info["items"] == items


def test_gowalla_keeps_the_published_split_and_original_ids(shared_data, tmp_path):
    ds = prepared(shared_data, tmp_path, "lightgcn", "lightgcn/gowalla")
    assert ds.info()["splits"] == {"train": 810_128, "test": 217_242}
    assert ds.metadata["split_method"] == "given"
    # the file's remapped ids are kept as internal ids; the map reports SNAP's original ids
    item_map = ds.table("item_map")
    assert item_map.column("original")[0].as_py() == 8975 and item_map.column("internal")[0].as_py() == 0
    first_line = (shared_data / "lightgcn/gowalla/train.txt").read_text().split("\n", 1)[0].split()
    user0 = ds.table("train").filter(pc.equal(ds.table("train").column("user_id"), 0))
    assert user0.column("item_id").to_pylist() == [int(x) for x in first_line[1:]]


def test_amazon_book_partial_counts_listed_and_active_users(shared_data, tmp_path):
    info = prepared(shared_data, tmp_path, "lightgcn", "lightgcn/amazon-book-partial").info()
    assert info["interactions"] == 603_378
    # the README's 52,643 users are the users listed in test.txt; 4 of them have no items there
    assert info["id_map"]["users"] == 52_643
    assert info["users"] == 52_643 - 4
    assert any("4 users listed without items" in n for n in info["notes"])
    assert info["split_method"] == "ratio"


def test_ml_100k_attributes_and_official_split(shared_data, tmp_path):
    ds = prepared(shared_data, tmp_path, "ml-100k", "ml-100k", PrepareConfig(split="given"), official_split="u1")
    info = ds.info()
    assert info["splits"] == {"train": 80_000, "test": 20_000}
    assert info["item_attributes"] == {"items": 1682, "categories": 19}
    assert info["user_attributes"]["users"] == 943
    toy_story = ds.table("item_attributes").slice(0, 1).to_pylist()[0]
    names = ds.metadata["category_names"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert sorted(names[c] for c in toy_story["categories"]) == ["Animation", "Children's", "Comedy"]


def test_ml_1m_pairs_and_posters(shared_data, tmp_path):
    from distrec.data.readers.images import read_image_collection

    raw = read_source("ml-1m", shared_data / "ml-1m")
    raw.item_images = read_image_collection(shared_data / "ml-1m-posters/MovieImages.tar", raw.bad_lines)
    tables, meta = prepare(raw, PrepareConfig(), "ml-1m")
    info = write_prepared(tables, meta, tmp_path / "out").info()
    assert (info["users"], info["items"], info["interactions"]) == (6040, 3706, 1_000_209)
    assert info["images"] == {"items": 3699}  # 3,699 of the 3,706 rated movies have a poster
    assert info["item_attributes"] == {"items": 3706, "categories": 18}


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_images_round_trip(shared_data, tmp_path, name):
    ds = prepared(shared_data, tmp_path, "idx", name)
    assert ds.info()["images"] == {"train": 60_000, "test": 10_000}
    test = ds.table("images_test").slice(0, 16).to_pydict()
    decoded = decode_images(
        {k: np.array(v, dtype=object) if k == "image" else np.array(v) for k, v in test.items()}, mode="L"
    )
    raw = read_idx_file(shared_data / name / "t10k-images-idx3-ubyte.gz")[:16]
    assert np.array_equal(decoded["pixels"][..., 0], raw)
    labels = read_idx_file(shared_data / name / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(ds.table("images_test").column("label").to_numpy(), labels)


def test_poster_collection_alone(shared_data, tmp_path):
    info = prepared(shared_data, tmp_path, "images", "ml-1m-posters/MovieImages.tar").info()
    assert info["images"] == {"items": 3872}
