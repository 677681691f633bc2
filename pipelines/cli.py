"""`orchestra-ray` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple

from pipelines.bench.arguments import add_bench_parser

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
    from orchestra_ray.config_load import check_run_root, load_config, make_paths_absolute
    from orchestra_ray.errors import ConfigError
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
    make_paths_absolute(cfg)  # the run's config.yaml then reads the same from any directory
    check_run_root(cfg.run.root)
    zoo = load_zoo(cfg)  # data problems surface here, before the cluster starts
    families = load_families(cfg, zoo)

    from pipelines.cluster import check_placement, connect
    from pipelines.memory import PeakMemory
    from pipelines.plan import check_plan
    from pipelines.stopping import RECEIVED, Stopped, kept, stop_on_signals
    from pipelines.progress import Progress, format_summary
    from pipelines.train import new_run_dir, train

    import ray

    progress = Progress()
    check_plan(cfg, progress.note, args.address)  # a config that cannot fit stops here, before any actor starts
    run_dir = None
    with PeakMemory() as mem:
        progress.note(connect(cfg, args.address))
        try:
            stop_on_signals()  # after ray.init, which installs handlers of its own
            check_placement(cfg)
            run_dir = args.resume or new_run_dir(cfg, config_name)
            progress.note(f"run directory: {os.path.abspath(run_dir)}")
            summary = train(cfg, zoo, run_dir, progress, resume=bool(args.resume), families=families)
        except KeyboardInterrupt:  # ours, or one Ray re-raised as a plain KeyboardInterrupt
            raise Stopped(RECEIVED[-1] if RECEIVED else "SIGINT", kept(run_dir)) from None
        finally:
            ray.shutdown()
        summary["peak_memory_gb"] = mem.peak_gb
    joined = bool(args.address or cfg.cluster.address or os.environ.get("RAY_ADDRESS"))
    scope = "driver only" if joined else "driver + local Ray"
    print(format_summary(summary, mem.peak_gb, scope, cluster_stopped=not joined), flush=True)
    return 0


def _of_run(path: str, items: List[str]):
    """(checkpoint, run dir, config, zoo, families) of a run directory or checkpoint: the run's own
    config unless another is named, then overrides; data problems surface before the cluster starts."""
    from pipelines.eval import eval_config, resolve_checkpoint
    from pipelines.families import load_families
    from pipelines.zoo import load_zoo

    checkpoint, run_dir = resolve_checkpoint(path)
    config_arg, overrides = _split_args(items)
    cfg = eval_config(run_dir, _config_path(config_arg) if config_arg else None, overrides)
    zoo = load_zoo(cfg)
    return checkpoint, run_dir, cfg, zoo, load_families(cfg, zoo)


def cmd_eval(args) -> int:
    checkpoint, run_dir, cfg, zoo, families = _of_run(args.checkpoint, args.items)
    note = None
    if args.test_data:
        from pipelines.eval import with_test_data

        zoo, families, note = with_test_data(cfg, zoo, families, args.test_data)

    from pipelines.cluster import connect
    from pipelines.eval import run_eval
    from pipelines.progress import Progress

    import ray

    progress = Progress()
    progress.note(connect(cfg, args.address))
    progress.note(f"checkpoint: {checkpoint}")
    if note:
        progress.note(note)
    try:
        eval_dir = run_eval(checkpoint, run_dir, cfg, zoo, families, progress, router=args.router,
                            router_iterations=args.router_iterations, test_data=args.test_data)
    finally:
        ray.shutdown()
    from orchestra_ray.checkpoint import read_state
    from pipelines.tracking import report_to_run

    report_to_run(cfg, run_dir, eval_dir, int(read_state(checkpoint).get("step", 0)), progress.note)
    with open(os.path.join(eval_dir, "report.md")) as f:
        print(f.read(), flush=True)
    print(f"report: {os.path.join(eval_dir, 'report.md')} (and report.html, pareto.png, tool_share.png, "
          f"training_curves.png)", flush=True)
    return 0


def cmd_plan(args) -> int:
    from orchestra_ray.config_load import load_config
    from pipelines.plan import refusal, run_plan, table

    config_arg, overrides = _split_args(args.items)
    p = run_plan(load_config(_config_path(config_arg), overrides))
    print(table(p), flush=True)
    if not p.fits:
        print(f"orchestra-ray: {refusal(p)}", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args) -> int:
    from pipelines.bench.runner import run_benchmark

    config_arg, overrides = _split_args(args.items)
    if args.name == "copy":  # it probes domain tasks, which the quickstart has none of
        config_arg = config_arg or "mixed"
    config = _config_path(config_arg) if args.name in ("breakdown", "trl", "copy", "routes", "generate") else config_arg
    run_benchmark(args.name, args, config, overrides)
    return 0


def cmd_router(args) -> int:
    _, run_dir, cfg, zoo, families = _of_run(args.run_dir, args.items)

    from pipelines.cluster import connect
    from pipelines.eval import train_run_router
    from pipelines.progress import Progress

    import ray

    progress = Progress()
    progress.note(connect(cfg, args.address))
    try:
        out_dir = train_run_router(cfg, zoo, families, run_dir, progress, args.iterations)
    finally:
        ray.shutdown()
    print(f"router: {out_dir} (used by `orchestra-ray eval` of this run)", flush=True)
    return 0


def cmd_serve(args) -> int:
    import signal
    import time

    from pipelines.serve import serving_config

    config_arg, overrides = _split_args(args.items)
    checkpoint, _, cfg, scfg = serving_config(args.checkpoint, _config_path(config_arg) if config_arg else None, overrides)

    from pipelines.cluster import connect
    from pipelines.progress import Progress
    from orchestra_ray.experts.base import ExpertError
    from pipelines.serve import ServeError, start_serving

    import ray

    progress = Progress()
    progress.note(connect(cfg, args.address))
    progress.note(f"checkpoint: {checkpoint}")
    try:
        try:
            served = start_serving(checkpoint, cfg, scfg)
        except (ExpertError, ServeError) as exc:
            print(f"orchestra-ray: error: {exc}", file=sys.stderr)
            return 1
        progress.note(f"serving '{served.model_name}' at {served.base_url} (POST /chat/completions, GET /models; "
                      f"health: {served.base_url[:-len('/v1')]}/healthz); Ctrl-C stops")
        # SIGTERM (a process manager) stops it as Ctrl-C does, and Ctrl-C works even when the
        # process was started with SIGINT ignored (a background job of a script).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        finally:
            served.shutdown()
    finally:
        ray.shutdown()


def cmd_submit(args) -> int:
    from pipelines import submit as job

    config_arg, overrides = _split_args(args.items)
    path = _config_path(config_arg)
    entrypoint, runtime_env, cfg = job.job_spec(path, overrides, resolve_paths=args.resolve_paths)
    client = job.job_client(args.address)
    job_id = job.submit(client, entrypoint, runtime_env, args.job_id)
    address = client.get_address()
    where = os.path.join(cfg.run.root, cfg.run.name or f"{os.path.splitext(os.path.basename(path))[0]}-<time>")
    print(f"submitted job {job_id} to {address}\n"
          f"  run directory: {where}{'' if args.resolve_paths else ' (on the cluster)'}\n"
          f"  logs:   orchestra-ray job logs {job_id} --follow --address {address}\n"
          f"  status: orchestra-ray job status {job_id} --address {address}\n"
          f"  stop:   orchestra-ray job stop {job_id} --address {address}", flush=True)
    return _follow(client, job_id) if args.follow else 0


def _follow(client, job_id: str) -> int:
    from pipelines import submit as job

    try:
        status = job.follow(client, job_id)
    except KeyboardInterrupt:
        print(f"orchestra-ray: stopped following; job {job_id} goes on (orchestra-ray job stop {job_id} "
              f"--address {client.get_address()} stops it)", file=sys.stderr)
        return 130
    print(f"job {job_id} {status}", flush=True)
    return 0 if status == "SUCCEEDED" else 1


def cmd_job(args) -> int:
    from pipelines import submit as job

    client = job.job_client(args.address)
    if args.action == "status":
        info = job.job_info(client, args.job_id)
        message = (info.message or "").strip().splitlines()
        print(f"{args.job_id}: {info.status}" + (f" ({message[0]})" if message else ""))
        print(f"  entrypoint: {info.entrypoint}")
    elif args.action == "logs":
        if args.follow:
            return _follow(client, args.job_id)
        print(job.job_logs(client, args.job_id), end="", flush=True)
    else:
        running = job.stop_job(client, args.job_id)
        print(f"job {args.job_id}: " + ("asked to stop" if running else "not running; nothing to stop"))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestra-ray", description="Train tool-orchestrating policies with GRPO on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    # --address of the commands that join a Ray cluster (or start an embedded one)
    join = argparse.ArgumentParser(add_help=False)
    join.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster)")
    p = sub.add_parser("train", parents=[join], help="warm start + GRPO training (embedded local Ray cluster unless --address)")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]",
                   help="a YAML file or a shipped config name (default: quickstart), then dotted overrides")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("plan", help="the memory plan of a config: what each actor holds on which device, and whether it fits "
                                    "(exit 1 when it cannot); reads only the model's config, no weights")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]", help="as for train")
    p.set_defaults(run=cmd_plan)

    p = sub.add_parser("eval", parents=[join], help="the policy of a checkpoint and the baselines on the held-out split; writes a report")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint directory, or a run directory (its latest checkpoint)")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]",
                   help="default: the run's own config.yaml; then dotted overrides")
    p.add_argument("--no-router", dest="router", action="store_false", help="leave out the learned RLlib router baseline")
    p.add_argument("--test-data", metavar="DIR", help="hold out every question of another data set in the replay schema "
                   "(questions.parquet, responses.parquet with the zoo's arms); baselines are fitted on the run's "
                   "training split; the report goes to eval/<checkpoint>/<DIR's name>/")
    p.add_argument("--router-iterations", type=int, default=30, help="PPO iterations when the router is trained (default 30)")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("router", parents=[join], help="train the learned RLlib PPO router baseline on a run's training split")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or one of its checkpoints)")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]", help="as for eval")
    p.add_argument("--iterations", type=int, default=30, help="PPO iterations (default 30)")
    p.set_defaults(run=cmd_router)

    p = sub.add_parser("serve", parents=[join], help="serve a checkpoint's policy and its tool zoo behind an OpenAI-compatible API on Ray Serve")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint directory, or a run directory (its latest checkpoint)")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]",
                   help="default: the run's own config.yaml; then dotted overrides, serving.* for the server")
    p.set_defaults(run=cmd_serve)

    address = argparse.ArgumentParser(add_help=False)
    address.add_argument("--address", default=None,
                         help="the cluster's job server, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, "
                              "else RAY_ADDRESS, else http://127.0.0.1:8265)")
    p = sub.add_parser("submit", parents=[address], help="run `train` as a Ray job on a cluster")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value ...]", help="as for train")
    p.add_argument("--follow", action="store_true", help="print the job's logs until it ends; exit 1 unless it succeeded")
    p.add_argument("--job-id", default=None, help="the job's submission id (default: one Ray makes up)")
    p.add_argument("--no-resolve-paths", dest="resolve_paths", action="store_false",
                   help="keep relative paths of the config relative to the job's copy of the project "
                        "(default: made absolute on this machine, for a local cluster or shared storage)")
    p.set_defaults(run=cmd_submit)
    p = sub.add_parser("job", help="status, logs or stop of a submitted job")
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("status", "the job's status"), ("logs", "the job's logs"), ("stop", "stop the job")):
        a = actions.add_parser(action, parents=[address], help=text)
        a.add_argument("job_id", metavar="JOB_ID")
        if action == "logs":
            a.add_argument("--follow", action="store_true", help="print the logs until the job ends")
    p.set_defaults(run=cmd_job)
    add_bench_parser(sub).set_defaults(run=cmd_bench)
    args = parser.parse_args(argv)
    if args.command in ("submit", "job"):
        from pipelines.submit import default_address

        args.address = args.address or default_address()

    from orchestra_ray.errors import ConfigError
    from orchestra_ray.rollout.failures import StepFailed
    from orchestra_ray.errors import DataError, LearnerLost
    from pipelines.stopping import Stopped
    from pipelines.submit import JobError

    try:
        return args.run(args)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError, JobError) as exc:
        print(f"orchestra-ray: error: {_cause(exc)}", file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"orchestra-ray: error: {exc}; the last checkpoint is kept: continue with --resume RUN_DIR", file=sys.stderr)
        return 1
    except LearnerLost as exc:
        print(f"orchestra-ray: error: {_cause(exc)}; continue with --resume RUN_DIR", file=sys.stderr)
        return 1
    except Stopped as exc:
        import signal

        print(f"orchestra-ray: stopped by {exc.signal_name}; actors ended; {exc.kept or 'nothing was written yet'}",
              file=sys.stderr)
        return 128 + int(getattr(signal, exc.signal_name, signal.SIGINT))
    except KeyboardInterrupt:
        if args.command == "serve":
            print("orchestra-ray: stopped serving", file=sys.stderr)
            return 0
        hint = "; continue with --resume RUN_DIR" if args.command == "train" else ""
        print(f"orchestra-ray: interrupted{hint}", file=sys.stderr)
        return 130


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("orchestra-ray")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _cause(exc: BaseException) -> BaseException:
    """The error an actor raised, without Ray's traceback around it (Ray re-raises it wrapped)."""
    return getattr(exc, "cause", None) or exc


if __name__ == "__main__":
    sys.exit(main())
