"""The search tool as a Ray actor: it holds one index, built or loaded from the cache at start."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, List, Optional

import ray

from actors.common import quiet_torch_process
from orchestra_ray.tools.search import SearchHit, SearchIndex, build_index, format_hits
from orchestra_ray.tools.settings import SearchConfig, validate_search_config


@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=3)
class SearchActor:
    """Answers the policy's search calls; a bad query comes back as an `error: ...` observation."""

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg
        self.index: Optional[SearchIndex] = None
        self.error: Optional[str] = None
        if cfg.backend == "dense":
            quiet_torch_process(max(1, int(cfg.num_cpus)))
        # A bad corpus is kept as the actor's error rather than raised: the driver reads it from
        # `ready` as one line, and the worker does not die of a data mistake.
        try:
            self.index = build_index(cfg)
        except ValueError as exc:
            self.error = str(exc)
        except Exception as exc:  # an unreadable file or a broken install: still one line, not a dead actor
            self.error = f"search index could not be built ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"

    def ready(self) -> Optional[str]:
        """None when the index is loaded, else why it is not."""
        return self.error

    def info(self) -> dict:
        if self.index is None:
            return {"error": self.error}
        return {
            "backend": self.index.backend,
            "documents": len(self.index.documents),
            "loaded_from_cache": self.index.loaded_from_cache,
            "cache_entry": self.index.path,
        }

    def search(self, query: Any, k: Any = None) -> str:
        """The formatted observation; never raises, since query and k come from the policy."""
        if self.index is None:
            return f"error: search is unavailable: {self.error}"
        try:
            hits = self.index.search(query, self.cfg.top_k if k is None else k)
        except ValueError as exc:
            return f"error: {exc}"
        except Exception as exc:  # a failure of the index must not end the episode either
            return f"error: search failed ({type(exc).__name__}: {str(exc)[:200]})"
        return format_hits(hits, self.cfg.max_chars_per_hit)

    def search_hits(self, query: str, k: int) -> List[SearchHit]:
        """The hits themselves, for callers that rank or grade them; ValueError on a bad query."""
        if self.index is None:
            raise ValueError(f"search is unavailable: {self.error}")
        return self.index.search(query, k)


def start_search_actor(cfg: Any) -> "ray.actor.ActorHandle":
    """A SearchActor with its index ready; ValueError, naming the problem, when the config or the
    corpus is bad.

    Paths are made absolute here, on the driver, because the actor's working directory is not
    necessarily the driver's.
    """
    validate_search_config(cfg)
    if not cfg.corpus:
        raise ValueError("search.corpus is empty: no corpus to search")
    plain = SearchConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SearchConfig)})
    plain.corpus = os.path.abspath(plain.corpus)
    plain.cache_dir = os.path.abspath(plain.cache_dir)
    handle = SearchActor.options(num_cpus=plain.num_cpus).remote(plain)
    error = ray.get(handle.ready.remote())
    if error is not None:
        ray.kill(handle)
        raise ValueError(error)
    return handle
