"""The search tool as a Ray actor on a real local cluster: formatted hits, error observations for bad
queries from the policy, and one-line start-up errors for a bad corpus."""

from __future__ import annotations

import os

import pytest
import ray

from actors.search_tool import start_search_actor
from orchestra_ray.tools.settings import SearchConfig
from search_corpus import DOCS, write_corpus


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), "docs.parquet")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def actor(corpus, cache_dir):
    handle = start_search_actor(SearchConfig(corpus=corpus, backend="bm25", top_k=2, max_chars_per_hit=60, cache_dir=cache_dir))
    yield handle
    ray.kill(handle)


def test_search_returns_formatted_hits(actor):
    out = ray.get(actor.search.remote("sourdough starter"))
    first = out.split("\n\n")[0]
    assert first.startswith("[1] Sourdough bread (id: sourdough)\nSourdough is leavened by a starter")
    assert first.endswith("…") and len(first.split("\n")[1]) <= 61  # cut at max_chars_per_hit

    # top_k applies when the policy names no k; an explicit k wins.
    water = ray.get(actor.search.remote("water"))
    assert "[2]" in water and "[3]" not in water
    assert "[4]" in ray.get(actor.search.remote("water", 4))
    assert ray.get(actor.search.remote("Sherpa", 5)) == ray.get(actor.search.remote("Sherpa", 1))
    assert ray.get(actor.search.remote("zeppelin")) == "no results"


def test_hits_for_callers_that_rank_them(actor):
    hits = ray.get(actor.search_hits.remote("event horizon", 1))
    assert [h.doc_id for h in hits] == ["black_hole"] and hits[0].score > 0


@pytest.mark.parametrize("query, k, expected", [
    ("", None, "error: search query is empty"),
    (None, None, "error: search query must be a string, got NoneType"),
    ({"q": "volcano"}, None, "error: search query must be a string, got dict"),
    ("volcano", 0, "error: search k must be >= 1, got 0"),
    ("volcano", "two", "error: search k must be an integer, got str"),
])
def test_bad_query_is_an_error_observation_and_the_actor_keeps_serving(actor, query, k, expected):
    assert ray.get(actor.search.remote(query, k)) == expected
    assert ray.get(actor.search.remote("magma and lava", 1)).startswith("[1] Volcanoes (id: volcano)")


def test_info_and_a_second_actor_loads_the_cache(actor, corpus, cache_dir):
    info = ray.get(actor.info.remote())
    assert info["backend"] == "bm25" and info["documents"] == len(DOCS)
    assert os.path.dirname(info["cache_entry"]) == cache_dir
    # Another process over the same corpus and cache directory loads the entry instead of building it.
    other = start_search_actor(SearchConfig(corpus=corpus, backend="bm25", cache_dir=cache_dir))
    try:
        again = ray.get(other.info.remote())
        assert again["loaded_from_cache"] and again["cache_entry"] == info["cache_entry"]
        assert ray.get(other.search.remote("Sicilian opening", 1)).startswith("[1] The Sicilian Defence (id: chess)")
    finally:
        ray.kill(other)


def test_dense_actor_finds_a_paraphrase(corpus, cache_dir):
    handle = start_search_actor(SearchConfig(corpus=corpus, backend="dense", top_k=1, cache_dir=cache_dir))
    try:
        assert ray.get(handle.search.remote("tallest peak on earth")).startswith("[1] Mount Everest (id: everest)")
        assert ray.get(handle.search.remote("   ")) == "error: search query is empty"
    finally:
        ray.kill(handle)


def _start_error(cfg) -> str:
    with pytest.raises(ValueError) as info:
        start_search_actor(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_corpus_file_is_one_clear_line(tmp_path):
    missing = str(tmp_path / "nowhere.parquet")
    assert _start_error(SearchConfig(corpus=missing, cache_dir=str(tmp_path / "cache"))) == f"search.corpus: file not found: {missing}"


def test_bad_corpus_content_is_one_clear_line_from_the_actor(tmp_path):
    path = write_corpus(str(tmp_path), "dup.jsonl", DOCS[:3] + [DOCS[0]])
    message = _start_error(SearchConfig(corpus=path, cache_dir=str(tmp_path / "cache")))
    assert message == f"corpus file {path}: duplicate id '{DOCS[0]['id']}' (line 1 and line 4)"


def test_damaged_cache_entry_is_one_clear_line_from_the_actor(corpus, tmp_path):
    cfg = SearchConfig(corpus=corpus, cache_dir=str(tmp_path / "cache"))
    first = start_search_actor(cfg)
    entry = ray.get(first.info.remote())["cache_entry"]
    ray.kill(first)
    for name in os.listdir(entry):
        if name.startswith("data."):
            with open(os.path.join(entry, name), "r+b") as f:
                f.truncate(10)
    message = _start_error(cfg)
    assert message.startswith(f"search cache entry {entry} is corrupt (") and message.endswith("delete it to rebuild")


def test_relative_paths_are_resolved_on_the_driver(tmp_path, monkeypatch):
    write_corpus(str(tmp_path), "rel.parquet")
    monkeypatch.chdir(tmp_path)
    handle = start_search_actor(SearchConfig(corpus="rel.parquet", cache_dir="cache"))
    try:
        info = ray.get(handle.info.remote())
        assert info["cache_entry"].startswith(str(tmp_path / "cache") + os.sep)
    finally:
        ray.kill(handle)
