"""The search tool's retrieval over a real corpus file: BM25 and the bundled dense encoder, the
on-disk index cache, and the errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from orchestra_ray.tools.search import (FAISS_FILE, IDS_FILE, META_FILE, BM25Index, DenseIndex, SearchHit, build_index,
                                        check_query, format_hits, read_meta, tokenize)
from orchestra_ray.tools.settings import SearchConfig, validate_search_config
from search_corpus import DOCS, write_corpus

BY_ID = {d["id"]: d for d in DOCS}

# Paraphrases sharing no word with their document, so only a dense index can find it.
PARAPHRASES = [
    ("photosynthesis", "How do green leaves turn light into food?"),
    ("vaccine", "shots that stop people catching diseases"),
    ("everest", "tallest peak on earth"),
    ("tides", "why does the ocean go up and down twice a day"),
    ("espresso", "strong small cup of caffeinated drink"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def bm25(corpus, tmp_path_factory) -> BM25Index:
    return build_index(SearchConfig(corpus=corpus, backend="bm25", cache_dir=str(tmp_path_factory.mktemp("cache"))))


@pytest.fixture(scope="module")
def dense(corpus, tmp_path_factory) -> DenseIndex:
    # The encoder is loaded here once per process (load_encoder is cached) and shared by every dense test.
    return build_index(SearchConfig(corpus=corpus, backend="dense", cache_dir=str(tmp_path_factory.mktemp("cache"))))


def _ids(hits):
    return [h.doc_id for h in hits]


def _entries(cache_dir: str):
    return sorted(n for n in os.listdir(cache_dir) if not n.startswith("."))


# ---------------------------------------------------------------- retrieval


@pytest.mark.parametrize("query, expected", [
    ("chlorophyll pigment", "photosynthesis"),
    ("magma and lava", "volcano"),
    ("Sicilian opening", "chess"),
    ("saxophone solos", "jazz"),
    ("sourdough starter", "sourdough"),
    ("event horizon", "black_hole"),
    ("waggle dance", "honey_bee"),
    ("SHERPA guides", "everest"),
    ("lithium-ion battery", "ev_battery"),
])
def test_bm25_keyword_query_finds_its_document_first(bm25, query, expected):
    hits = bm25.search(query, 3)
    assert hits[0].doc_id == expected
    assert hits[0].title == BY_ID[expected]["title"] and hits[0].text == BY_ID[expected]["text"]
    assert all(a.score >= b.score > 0 for a, b in zip(hits, hits[1:]))


def test_bm25_lists_only_documents_sharing_a_term(bm25):
    # "Sherpa" occurs in one document; the other 19 score 0 and are not hits.
    assert _ids(bm25.search("Sherpa", 5)) == ["everest"]
    assert bm25.search("the of and", 3) == []  # stopwords only
    assert bm25.search("zeppelin", 3) == []


def test_k_bounds_the_number_of_hits(bm25, dense):
    assert len(bm25.search("water", 1)) == 1
    assert len(bm25.search("water", 20)) == len([d for d in DOCS if "water" in tokenize(d["title"] + " " + d["text"])])
    assert len(dense.search("water", 1)) == 1
    assert len(dense.search("water", 100)) == len(DOCS)


@pytest.mark.parametrize("expected, query", PARAPHRASES)
def test_dense_finds_a_paraphrase_that_bm25_misses(bm25, dense, expected, query):
    doc = BY_ID[expected]
    assert not set(tokenize(query)) & set(tokenize(f"{doc['title']} {doc['text']}"))
    assert expected not in _ids(bm25.search(query, 3))
    hits = dense.search(query, 3)
    assert hits[0].doc_id == expected
    assert hits[0].score > hits[1].score >= hits[2].score


def test_dense_scores_are_cosine_similarities(dense):
    hits = dense.search("volcano eruption", len(DOCS))
    assert hits[0].doc_id == "volcano"
    assert all(-1.0 <= h.score <= 1.0 + 1e-5 for h in hits)
    assert sorted(_ids(hits)) == sorted(BY_ID)


# ---------------------------------------------------------------- cache


@pytest.mark.parametrize("backend", ["bm25", "dense"])
def test_index_is_built_once_then_loaded_from_cache(corpus, tmp_path, backend, dense):
    cfg = SearchConfig(corpus=corpus, backend=backend, cache_dir=str(tmp_path / "cache"))
    started = time.perf_counter()
    first = build_index(cfg)
    build_s = time.perf_counter() - started
    assert not first.loaded_from_cache
    meta = read_meta(first)
    assert meta["backend"] == backend and meta["documents"] == len(DOCS) and meta["corpus"] == corpus
    files = {n: os.stat(os.path.join(first.path, n)).st_mtime_ns for n in os.listdir(first.path)}

    started = time.perf_counter()
    second = build_index(cfg)
    load_s = time.perf_counter() - started
    assert second.loaded_from_cache
    assert second.path == first.path and _entries(cfg.cache_dir) == [os.path.basename(first.path)]
    # Nothing was written again: the same files with the same times, and the build record unchanged.
    assert {n: os.stat(os.path.join(second.path, n)).st_mtime_ns for n in os.listdir(second.path)} == files
    assert read_meta(second) == meta
    assert _ids(second.search("Sherpa guides", 1)) == _ids(first.search("Sherpa guides", 1)) == ["everest"]
    print(f"{backend}: build {build_s * 1000:.1f} ms, load from cache {load_s * 1000:.1f} ms")


def test_backends_have_separate_entries(corpus, tmp_path, dense):
    cache = str(tmp_path / "cache")
    a = build_index(SearchConfig(corpus=corpus, backend="bm25", cache_dir=cache))
    b = build_index(SearchConfig(corpus=corpus, backend="dense", cache_dir=cache))
    assert a.path != b.path and not b.loaded_from_cache
    assert len(_entries(cache)) == 2
    assert os.path.isfile(os.path.join(b.path, FAISS_FILE))


def test_changed_corpus_content_gets_a_new_entry(tmp_path):
    cache = str(tmp_path / "cache")
    path = write_corpus(str(tmp_path), "c.jsonl")
    first = build_index(SearchConfig(corpus=path, cache_dir=cache))
    assert bm25_top(first, "zeppelin") is None

    # Same ids and file name, one text changed.
    write_corpus(str(tmp_path), "c.jsonl", DOCS[:-1] + [dict(DOCS[-1], text="The zeppelin is a rigid airship.")])
    changed = build_index(SearchConfig(corpus=path, cache_dir=cache))
    assert not changed.loaded_from_cache and changed.path != first.path
    assert len(_entries(cache)) == 2
    assert bm25_top(changed, "zeppelin") == DOCS[-1]["id"]
    assert read_meta(changed)["corpus_sha256"] != read_meta(first)["corpus_sha256"]

    # Back to the original bytes: its entry is still there and is loaded.
    write_corpus(str(tmp_path), "c.jsonl")
    again = build_index(SearchConfig(corpus=path, cache_dir=cache))
    assert again.loaded_from_cache and again.path == first.path
    assert bm25_top(again, "zeppelin") is None


def bm25_top(index, query):
    hits = index.search(query, 1)
    return hits[0].doc_id if hits else None


def _cache_error(cfg) -> str:
    with pytest.raises(ValueError) as info:
        build_index(cfg)
    message = str(info.value)
    assert "\n" not in message and "search cache entry" in message and "delete it to rebuild" in message
    return message


@pytest.mark.parametrize("damage, expected", [
    ("truncate_faiss", "is corrupt"),
    ("drop_faiss", "is corrupt"),
    ("reorder_ids", "does not match the corpus documents"),
    ("meta_other_corpus", "was built from other input (other corpus_sha256)"),
    ("meta_other_encoder", "was built from other input (other encoder)"),
    ("garbage_meta", "is unreadable"),
])
def test_damaged_dense_entry_is_a_clear_error(corpus, tmp_path, dense, damage, expected):
    cfg = SearchConfig(corpus=corpus, backend="dense", cache_dir=str(tmp_path / "cache"))
    entry = build_index(cfg).path
    if damage == "truncate_faiss":
        with open(os.path.join(entry, FAISS_FILE), "r+b") as f:
            f.truncate(100)
    elif damage == "drop_faiss":
        os.remove(os.path.join(entry, FAISS_FILE))
    elif damage == "reorder_ids":
        _rewrite_json(os.path.join(entry, IDS_FILE), lambda ids: ids[::-1])
    elif damage == "meta_other_corpus":
        _rewrite_json(os.path.join(entry, META_FILE), lambda m: dict(m, corpus_sha256="0" * 64))
    elif damage == "meta_other_encoder":
        _rewrite_json(os.path.join(entry, META_FILE), lambda m: dict(m, encoder="another-encoder-1.0"))
    else:
        with open(os.path.join(entry, META_FILE), "w") as f:
            f.write("{not json")
    message = _cache_error(cfg)
    assert entry in message and expected in message

    # Deleting the entry, as the message says, is enough to get a working index again.
    shutil.rmtree(entry)
    rebuilt = build_index(cfg)
    assert not rebuilt.loaded_from_cache and rebuilt.search("tallest peak on earth", 1)[0].doc_id == "everest"


def test_damaged_bm25_entry_is_a_clear_error(corpus, tmp_path):
    cfg = SearchConfig(corpus=corpus, backend="bm25", cache_dir=str(tmp_path / "cache"))
    entry = build_index(cfg).path
    data = [n for n in os.listdir(entry) if n.startswith("data.")]
    assert data, os.listdir(entry)
    with open(os.path.join(entry, data[0]), "r+b") as f:
        f.truncate(10)
    message = _cache_error(cfg)
    assert entry in message and "is corrupt" in message


def test_entry_for_fewer_documents_is_refused(tmp_path):
    # An entry whose index holds other documents than its ids file says: the count check catches it.
    cache = str(tmp_path / "cache")
    small = write_corpus(str(tmp_path), "small.parquet", DOCS[:5])
    full = write_corpus(str(tmp_path), "full.parquet")
    small_entry = build_index(SearchConfig(corpus=small, cache_dir=cache)).path
    full_entry = build_index(SearchConfig(corpus=full, cache_dir=cache)).path
    keep = {n: open(os.path.join(full_entry, n), "rb").read() for n in (IDS_FILE, META_FILE)}
    shutil.rmtree(full_entry)
    shutil.copytree(small_entry, full_entry)
    for name, content in keep.items():
        with open(os.path.join(full_entry, name), "wb") as f:
            f.write(content)
    message = _cache_error(SearchConfig(corpus=full, cache_dir=cache))
    assert "is corrupt" in message and f"the corpus has {len(DOCS)}" in message


def _rewrite_json(path, change):
    with open(path) as f:
        value = json.load(f)
    with open(path, "w") as f:
        json.dump(change(value), f)


def test_unwritable_cache_dir_is_a_clear_error(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(ValueError, match=r"^search\.cache_dir: cannot write .*file"):
        build_index(SearchConfig(corpus=corpus, cache_dir=str(blocker)))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, expected", [
    ({"backend": "sparse"}, "search.backend must be one of ['bm25', 'dense'], got 'sparse'"),
    ({"top_k": 0}, "search.top_k must be >= 1, got 0"),
    ({"max_chars_per_hit": 0}, "search.max_chars_per_hit must be >= 1, got 0"),
    ({"cache_dir": " "}, "search.cache_dir must not be empty"),
    ({"num_cpus": -1}, "search.num_cpus must be >= 0, got -1"),
    ({"corpus": "/nonexistent/corpus.parquet"}, "search.corpus: file not found: /nonexistent/corpus.parquet"),
    ({"corpus": __file__}, "search.corpus: unsupported file type"),
    ({"corpus": ""}, "search.corpus is empty"),
])
def test_bad_config_names_the_key(corpus, tmp_path, change, expected):
    cfg = SearchConfig(**{"corpus": corpus, "cache_dir": str(tmp_path / "cache"), **change})
    with pytest.raises(ValueError) as info:
        build_index(cfg)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(cfg.cache_dir) or not _entries(cfg.cache_dir)


def test_bad_corpus_stops_the_build_with_file_and_row(tmp_path):
    path = write_corpus(str(tmp_path), "dup.parquet", DOCS[:4] + [DOCS[2]])
    cfg = SearchConfig(corpus=path, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"corpus file .*dup\.parquet: duplicate id 'chess' \(row 2 and row 4\)"):
        build_index(cfg)
    assert not os.path.exists(cfg.cache_dir) or not _entries(cfg.cache_dir)


BAD_QUERIES = [
    ("", 3, "search query is empty"),
    ("  \n ", 3, "search query is empty"),
    (None, 3, "search query must be a string, got NoneType"),
    (42, 3, "search query must be a string, got int"),
    (["volcano"], 3, "search query must be a string, got list"),
    ("volcano", 0, "search k must be >= 1, got 0"),
    ("volcano", -2, "search k must be >= 1, got -2"),
    ("volcano", "3", "search k must be an integer, got str"),
    ("volcano", 2.0, "search k must be an integer, got float"),
    ("volcano", True, "search k must be an integer, got bool"),
]


@pytest.mark.parametrize("query, k, expected", BAD_QUERIES)
def test_bad_query_is_a_clear_error(bm25, dense, query, k, expected):
    for index in (bm25, dense):
        with pytest.raises(ValueError) as info:
            index.search(query, k)
        assert str(info.value) == expected
    check_query("volcano", 1)


def test_validate_accepts_the_defaults():
    validate_search_config(SearchConfig())


# ---------------------------------------------------------------- observation


def test_format_hits_numbers_names_and_cuts():
    long_text = "word " * 100
    hits = [
        SearchHit("a1", "First title", "Short   text\nwith\tspaces.", 2.0),
        SearchHit("b2", "  ", long_text, 1.0),
    ]
    out = format_hits(hits, 30)
    first, second = out.split("\n\n")
    assert first == "[1] First title (id: a1)\nShort text with spaces."
    header, body = second.split("\n")
    assert header == "[2] (untitled) (id: b2)"
    # Cut at 30 characters (trailing space dropped), marked as cut.
    assert body == ("word " * 6).rstrip() + "…"
    assert len(body) <= 31


def test_format_hits_keeps_text_of_exactly_max_chars():
    assert format_hits([SearchHit("x", "T", "a" * 10, 1.0)], 10) == "[1] T (id: x)\n" + "a" * 10
    assert format_hits([SearchHit("x", "T", "a" * 11, 1.0)], 10) == "[1] T (id: x)\n" + "a" * 10 + "…"


def test_format_hits_of_nothing():
    assert format_hits([], 100) == "no results"


def test_format_hits_over_a_real_search(bm25):
    out = format_hits(bm25.search("Sicilian opening", 1), 40)
    assert out.startswith("[1] The Sicilian Defence (id: chess)\nThe Sicilian Defence is a chess opening")
    assert out.endswith("…") and "[2]" not in out
