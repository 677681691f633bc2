"""`orchestra-ray` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def _config_path(arg: Optional[str]) -> str:
    """A YAML path, or the name of a config shipped in pipelines/configs/."""
    if arg is None:
        arg = "quickstart"
    if os.path.exists(arg) or arg.endswith((".yaml", ".yml")):
        return arg
    shipped = os.path.join(CONFIG_DIR, f"{arg}.yaml")
    return shipped if os.path.exists(shipped) else arg


def _split_args(items: List[str]) -> Tuple[Optional[str], List[str]]:
    config = None
    overrides = []
    for i, item in enumerate(items):
        if i == 0 and "=" not in item:
            config = item
        else:
            overrides.append(item)
    return config, overrides


def cmd_train(args) -> int:
    from orchestra_ray.config import ConfigError, load_config
    from pipelines.families import load_families
    from pipelines.zoo import load_zoo

    config_arg, overrides = _split_args(args.items)
    if args.resume:
        if not os.path.isfile(os.path.join(args.resume, "config.yaml")):
            raise FileNotFoundError(f"{args.resume} is not a run directory (no config.yaml)")
        if config_arg is not None:
            raise ConfigError(f"--resume continues a run with its own config; got config '{config_arg}' (overrides only)")
        cfg = load_config(os.path.join(args.resume, "config.yaml"), overrides)
        config_name = None
    else:
        path = _config_path(config_arg)
        cfg = load_config(path, overrides)
        config_name = os.path.splitext(os.path.basename(path))[0]
    zoo = load_zoo(cfg)  # data problems surface here, before the cluster starts
    families = load_families(cfg, zoo)

    from pipelines.cluster import check_placement, connect
    from pipelines.memory import PeakMemory
    from pipelines.progress import Progress, format_summary
    from pipelines.train import new_run_dir, train

    import ray

    progress = Progress()
    with PeakMemory() as mem:
        progress.note(connect(cfg, args.address))
        try:
            check_placement(cfg)
            run_dir = args.resume or new_run_dir(cfg, config_name)
            progress.note(f"run directory: {os.path.abspath(run_dir)}")
            summary = train(cfg, zoo, run_dir, progress, resume=bool(args.resume), families=families)
        finally:
            ray.shutdown()
        summary["peak_memory_gb"] = mem.peak_gb
    scope = "driver only" if (args.address or cfg.cluster.address or os.environ.get("RAY_ADDRESS")) else "driver + local Ray"
    print(format_summary(summary, mem.peak_gb, scope), flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestra-ray", description="Train tool-orchestrating policies with GRPO on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="warm start + GRPO training (embedded local Ray cluster unless --address)")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]",
                   help="a YAML file or a shipped config name (default: quickstart), then dotted overrides")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    args = parser.parse_args(argv)

    from orchestra_ray.config import ConfigError
    from orchestra_ray.frames import DataError

    try:
        return cmd_train(args)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError) as exc:
        print(f"orchestra-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("orchestra-ray: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
