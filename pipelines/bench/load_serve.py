"""Load benchmark of a served orchestrator: N chat-completion requests, C at a time, on FRAMES
questions under rotating preference profiles; prints requests per second and latency percentiles.

    python -m pipelines.bench.load_serve --url http://127.0.0.1:8000/v1 --requests 200 --concurrency 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import List, Optional, Tuple

from orchestra_ray.config import FRAMES_DATA

PROFILES = ("balanced", "accuracy-first", "cost-first", "latency-first")


def percentile(values: List[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


async def _one(client, model: str, question, profile: str, gate: asyncio.Semaphore) -> Tuple[float, Optional[str], float]:
    async with gate:
        t0 = time.perf_counter()
        try:
            out = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question.problem}],
                extra_body={"preference": profile, "question_id": question.question_id})
        except Exception as exc:  # counted and reported; the benchmark goes on
            return time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:200]}", 0.0
        return time.perf_counter() - t0, None, float(out.model_extra["orchestration"]["total_cost"])


async def run(url: str, requests: int, concurrency: int, questions, timeout_s: float) -> int:
    import openai

    # The client's own connection pool (up to 1000 connections) holds every concurrent request.
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=timeout_s)
    model = (await client.models.list()).data[0].id
    gate = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[_one(client, model, questions[i % len(questions)], PROFILES[i % len(PROFILES)], gate)
                                     for i in range(requests)])
    wall = time.perf_counter() - t0
    await client.close()
    ok = [lat for lat, err, _ in results if err is None]
    errors = [err for _, err, _ in results if err is not None]
    print(f"model {model} at {url}: {requests} requests, concurrency {concurrency}")
    print(f"completed {len(ok)}/{requests} in {wall:.2f} s: {len(ok) / wall:.1f} requests/s")
    if ok:
        print(f"latency s: p50 {percentile(ok, 50):.3f}  p90 {percentile(ok, 90):.3f}  p99 {percentile(ok, 99):.3f}  "
              f"mean {statistics.mean(ok):.3f}  max {max(ok):.3f}")
        print(f"mean orchestration cost per request: ${statistics.mean(c for _, e, c in results if e is None):.6f}")
        by_profile = {p: [c for i, (_, e, c) in enumerate(results) if e is None and PROFILES[i % len(PROFILES)] == p]
                      for p in PROFILES}
        print("mean cost per request by profile: " + ", ".join(f"{p} ${statistics.mean(v):.6f}" for p, v in by_profile.items() if v))
    for err in sorted(set(errors))[:5]:
        print(f"failed ({errors.count(err)}x): {err}")
    return 0 if not errors else 1


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench.load_serve", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the server's OpenAI base URL")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--questions", type=int, default=50, help="distinct FRAMES questions to cycle through")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--data", default=os.environ.get("ORCHESTRA_RAY_FRAMES", FRAMES_DATA),
                   help="the FRAMES replay data set the server was started with")
    args = p.parse_args(argv)
    for name in ("requests", "concurrency", "questions"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    from orchestra_ray.families.frames import load_questions
    from orchestra_ray.errors import DataError

    try:
        questions = load_questions(args.data)[: args.questions]
    except DataError as exc:
        print(f"load_serve: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(args.url, args.requests, args.concurrency, questions, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
