"""`orchestra-ray serve CHECKPOINT`: a checkpoint's policy and its tool zoo as a Ray Serve
application with an OpenAI-compatible API (see orchestra_ray/serving/api.py for the request fields).

The experts are the run's own expert actors (replay, OpenAI-compatible endpoints or models on Serve,
as the config says), the toolset and episode limits are those of the run's rollout workers, and
every request runs through the same multi-turn loop as training, greedy by default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ray import serve

from actors.orchestrator_serve import PolicySpec, orchestrator_application
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.rollout.tool_router import BASIC_TOOLS
from orchestra_ray.families.frames import load_questions
from orchestra_ray.grpo.preferences import PreferenceError, profile_vector
from orchestra_ray.serving.api import ApiSpec
from orchestra_ray.serving.config import ServingConfig, load_serving_config, split_overrides
from orchestra_ray.families.task import FRAMES
from pipelines.eval import eval_config, resolve_checkpoint
from pipelines.families import load_families
from pipelines.workers import Workers
from pipelines.zoo import load_zoo


class ServeError(RuntimeError):
    """The application could not be deployed; one line."""


@dataclass
class Served:
    base_url: str  # the OpenAI base URL, ending in /v1
    model_name: str
    app_name: str
    workers: Optional[Workers] = None  # the experts and the search actor the application calls
    started_serve: bool = False

    def shutdown(self) -> None:
        """Removes the application and the actors it called; stops Serve if it was started here."""
        if self.app_name in serve.status().applications:
            serve.delete(self.app_name)
        if self.workers is not None:
            self.workers.stop()
        if self.started_serve:
            serve.shutdown()


def serving_config(checkpoint_arg: str, config: Optional[str], overrides: List[str]) -> Tuple[str, str, OrchestraConfig, ServingConfig]:
    """(checkpoint, run dir, run config, serving config): the run's own config unless another is
    named, then `key=value` overrides; `serving.*` overrides are the server's settings."""
    checkpoint, run_dir = resolve_checkpoint(checkpoint_arg)
    if not os.path.isdir(os.path.join(checkpoint, "policy")):
        raise FileNotFoundError(f"checkpoint {checkpoint} has no policy/ directory")
    run_overrides, serve_overrides = split_overrides(overrides)
    cfg = eval_config(run_dir, config, run_overrides)
    scfg = load_serving_config(serve_overrides, cfg.rollout.max_turns)
    if scfg.model_name is None:
        scfg.model_name = f"{os.path.basename(run_dir)}/{os.path.basename(checkpoint)}"
    return checkpoint, run_dir, cfg, scfg


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_serving(checkpoint: str, cfg: OrchestraConfig, scfg: ServingConfig) -> Served:
    """Deploys the application on the connected cluster and returns once it serves."""
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    zoo = load_zoo(cfg)  # data problems surface here, before anything starts
    families = load_families(cfg, zoo)
    try:
        profile_vector(scfg.default_profile, zoo.slots, cfg.preferences.weights)
    except PreferenceError as exc:
        raise ConfigError(f"invalid value for config key 'serving.default_profile': {exc}") from None
    spec = PolicySpec.from_config(cfg, scfg, os.path.join(checkpoint, "policy"), families.toolsets[FRAMES])
    questions = {q.question_id: (q.problem, q.answer) for q in load_questions(cfg.data.path)}
    api = ApiSpec(scfg.model_name, tuple(zoo.slots), tuple(t.name for t in spec.tools if t.name in BASIC_TOOLS), questions,
                  scfg.default_profile, scfg.max_turns, scfg.temperature, scfg.max_question_chars,
                  dict(cfg.preferences.weights))

    served = Served("", scfg.model_name, scfg.app_name, Workers(cfg, families, zoo.slots))
    try:
        client = _get_global_client()
    except RayServeException:
        client = None
    if client is None:
        serve.start(http_options={"host": scfg.host, "port": scfg.port or _free_port(scfg.host)})
        served.started_serve = True
        client = _get_global_client()
    try:
        workers = served.workers
        workers.start_experts()
        workers.start_tools(code=False)  # the served toolset runs no code
        workers.wait_experts()
        app = orchestrator_application(spec, api, workers.experts, workers.search, scfg)
        try:
            serve.run(app, name=scfg.app_name, route_prefix=scfg.route_prefix)
        except RuntimeError as exc:  # Serve reports a replica that cannot start with its whole traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServeError(f"the orchestrator of {checkpoint} could not be deployed: {first[:300]}") from None
    except BaseException:
        served.shutdown()
        raise
    http = client.http_config
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "localhost", "127.0.0.1") else http.host
    prefix = "" if scfg.route_prefix == "/" else scfg.route_prefix
    served.base_url = f"http://{host}:{http.port}{prefix}/v1"
    return served
