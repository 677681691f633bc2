"""Write the generated function-calling domains to disk: per domain a tau2-format `tasks.json` and
the initial database as `db.sqlite`, then print how many drafts each filter dropped.

    python -m pipelines.domains --out DIR [--seed S] [--tasks-per-domain N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional

from orchestra_ray.families.domains import generate_domains, write_tau2_tasks
from orchestra_ray.families.domains.filters import STAT_KEYS


def stats_table(stats: Dict[str, Dict[str, int]]) -> str:
    header = ["domain", *STAT_KEYS]
    rows = [[name, *(str(s[k]) for k in STAT_KEYS)] for name, s in stats.items()]
    totals = ["total", *(str(sum(s[k] for s in stats.values())) for k in STAT_KEYS)]
    widths = [max(len(r[i]) for r in (header, *rows, totals)) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                     for r in (header, *rows, totals))


def write_domains(out: str, seed: int, tasks_per_domain: int) -> Dict[str, Dict[str, int]]:
    domains, tasks, stats = generate_domains(seed, tasks_per_domain)
    for name, domain in domains.items():
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        write_tau2_tasks(os.path.join(folder, "tasks.json"), tasks[name])
        db_path = os.path.join(folder, "db.sqlite")
        with open(db_path + ".tmp", "wb") as f:
            f.write(domain.db_bytes)
        os.replace(db_path + ".tmp", db_path)
    return stats


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.domains", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (one subfolder per domain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks-per-domain", type=int, default=120)
    args = parser.parse_args(argv)
    if args.tasks_per_domain < 0:
        parser.error(f"--tasks-per-domain must be >= 0, got {args.tasks_per_domain}")
    start = time.perf_counter()
    try:
        stats = write_domains(args.out, args.seed, args.tasks_per_domain)
    except OSError as exc:
        print(f"error: cannot write to {args.out}: {exc}", file=sys.stderr)
        return 1
    print(stats_table(stats))
    print(f"wrote {len(stats)} domains to {args.out} in {time.perf_counter() - start:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
