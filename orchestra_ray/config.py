"""The run configuration's schema: OmegaConf dataclasses, one per section.

Every key a run reads is declared here, so OmegaConf catches an unknown key or a wrong type before
any actor starts; `config_load` reads YAML and overrides into it and adds the checks types cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from orchestra_ray.paths import CACHE_DIR
from orchestra_ray.tools.settings import CodePoolConfig, SandboxConfig, SearchConfig
from orchestra_ray.tracking.settings import LoggingConfig


@dataclass
class RunConfig:
    root: str = "runs"
    name: Optional[str] = None  # default: <config name>-<timestamp>
    seed: int = 0


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # None: embedded local cluster (or RAY_ADDRESS if set)
    num_cpus: Optional[int] = None  # embedded cluster only; None sizes it to the machine
    namespace: str = "orchestra-ray"
    # The embedded cluster's dashboard; loopback unless a user opens it on purpose.
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Optional[int] = None  # None: 8265, or the next free port when another cluster has it
    metrics_export_port: Optional[int] = None  # Prometheus endpoint of the embedded cluster (None: Ray picks)


# The FRAMES replay data ships inside the package (orchestra_ray/data/frames_replay, its README
# states sources and licences); ORCHESTRA_RAY_FRAMES or data.path point elsewhere.
FRAMES_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "frames_replay")
# config.json of models the memory plan knows without a download (named by HF id, "/" as "__")
MODEL_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "model_configs")


@dataclass
class DataConfig:
    path: str = '${oc.env:ORCHESTRA_RAY_FRAMES,"' + FRAMES_DATA + '"}'
    heldout_fraction: float = 0.2
    max_train_questions: Optional[int] = None  # null: every question of the training split
    max_heldout_questions: Optional[int] = None  # null: every question of the held-out split


EXPERT_BACKENDS = ("replay", "openai", "serve")
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")  # request fields of an output-token limit
DEMONSTRATORS = ("strongest", "preference", "cascade", "best-cascade")  # warm_start.demonstrator


@dataclass
class ServeConfig:
    """A Ray Serve deployment of a local Hugging Face model (backend "serve")."""

    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0  # autoscaling adds a replica above this load per replica
    max_new_tokens: int = 256  # server-side cap on one answer
    route_prefix: Optional[str] = None  # default: /experts/<slot name>


@dataclass
class ExpertSlotConfig:
    name: str = "???"  # slot name the policy uses
    backend: str = "replay"  # replay | openai | serve
    arm: Optional[str] = None  # recorded arm that answers for this slot (required for replay)
    description: str = ""
    # Prices: USD per 1M tokens from genai-prices for `price_model` (default: `model`, else `name`),
    # or set here (self-hosted models, negotiated rates); a value set here wins.
    price_model: Optional[str] = None
    price_provider: Optional[str] = None  # e.g. openai, anthropic, x-ai; default: guessed from the model
    input_price: Optional[float] = None
    output_price: Optional[float] = None
    # Replay latency is modelled from these; live backends report measured wall time.
    output_tokens_per_s: float = 100.0
    time_to_first_token_s: float = 0.5
    # Live backends ("openai": any OpenAI-compatible endpoint; "serve": a local model on Ray Serve).
    model: Optional[str] = None  # served model name (openai) or HF id / path (serve)
    base_url: Optional[str] = None  # openai only, e.g. https://api.openai.com/v1
    api_key_env: Optional[str] = None  # name of the env var holding the key; never the key itself
    timeout_s: float = 60.0
    max_retries: int = 3
    max_output_tokens: Optional[int] = None
    # openai only: the request field of that limit, max_tokens or max_completion_tokens; default:
    # max_completion_tokens for OpenAI reasoning models (gpt-5, o1, o3, o4), else max_tokens.
    token_limit_param: Optional[str] = None
    serve: ServeConfig = field(default_factory=ServeConfig)


@dataclass
class ZooConfig:
    experts: List[ExpertSlotConfig] = field(default_factory=list)
    strongest: str = "???"  # the slot the warm-start demonstrations always ask
    input_tokens_overhead: int = 40  # instructions sent with each question, in tokens
    max_response_chars: int = 300  # of an expert's answer shown to the policy: its start and end


@dataclass
class TinyModelConfig:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 2048
    seed: int = 0
    # Language-model pre-training on the project's own text, so the base model knows the tool-call
    # syntax and every expert's name before the warm start (a real base model knows far more).
    pretrain_steps: int = 300
    pretrain_seq_len: int = 128
    pretrain_batch_size: int = 16
    pretrain_lr: float = 3e-3
    # "packed": consecutive windows of the packed text (a document may be cut in two); "document":
    # each window starts at a document, so short ones (the domain lookups) are seen whole.
    pretrain_windows: str = "packed"


@dataclass
class PolicyConfig:
    model: str = "tiny"  # "tiny": build the project's tiny Qwen3; else a HF model id or path
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    cache_dir: str = CACHE_DIR  # orchestra_ray/paths.py
    dtype: str = "float32"
    device: str = "cpu"
    # The rollout workers' generation engine: "hf" (transformers, CPU or CUDA) or "vllm" (the
    # optional vllm extra, on a GPU; give rollout.num_gpus_per_worker). `vllm`: further vllm.LLM
    # arguments, e.g. {gpu_memory_utilization: 0.5, enforce_eager: true}.
    engine: str = "hf"
    vllm: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AutoscaleConfig:
    """The rollout pool grows when a step's queue of groups is longer than its workers serve within
    the step, and releases workers idle past a timeout; num_workers is the starting size."""

    enabled: bool = False
    min_workers: int = 1
    max_workers: int = 4
    groups_per_worker: int = 4  # groups one worker serves in a step; also the size of a dispatched batch
    idle_timeout_s: float = 30.0


@dataclass
class RolloutConfig:
    num_workers: int = 2
    group_size: int = 8
    tasks_per_step: int = 16
    max_turns: int = 4
    max_new_tokens: int = 48  # per policy turn
    max_total_tokens: int = 1536  # per episode, prompt included
    temperature: float = 1.0
    max_batch_size: int = 64  # sequences per generate call
    # The transformers engine keeps each live episode's KV cache between its turns, so a turn
    # prefills only its new tokens (the vLLM engine's prefix caching does the same); at most
    # kv_cache_max_tokens tokens are kept per worker, least recently used episodes dropped first.
    kv_cache: bool = True
    kv_cache_max_tokens: int = 65536
    # Each distinct prompt of a generate call is prefilled once (a group's G identical prompts);
    # decoding writes keys and values into buffers allocated per call (policy/preallocated_cache.py).
    share_prompt_prefill: bool = True
    preallocate_kv_cache: bool = True
    # The rollout engines' dtype; None: policy.dtype. A learner that keeps float32 weights (AdamW's
    # small steps need them) can serve rollouts in bfloat16: each version is cast as it is loaded.
    dtype: Optional[str] = None
    num_cpus_per_worker: float = 0.5
    num_gpus_per_worker: float = 0.0
    torch_threads: int = 1
    # Custom resources each worker asks for, e.g. {rollout: 1} on clusters whose rollout nodes
    # advertise them; an autoscaler then adds such nodes when workers are waiting for one.
    resources: Dict[str, float] = field(default_factory=dict)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    # A batch lost with its worker (process killed, node gone, hung past batch_timeout_s) is
    # re-issued to a live worker after retry_backoff_s x 2^(attempt-1), at most max_batch_retries times.
    max_batch_retries: int = 3
    retry_backoff_s: float = 1.0
    batch_timeout_s: float = 0.0  # 0: no limit
    # 0: synchronous GRPO (each step's rollouts use the latest weights). N > 0: asynchronous; the
    # rollouts of the next N steps are generated while the learner trains, and no sample more than
    # N weight versions older than the learner's is trained on.
    max_staleness: int = 0


@dataclass
class RewardConfig:
    std_normalize: bool = True  # False: Dr.GRPO advantages (R - mean)
    eps: float = 1e-6
    filter_zero_variance: bool = True
    filter_format_errors: bool = False
    filter_no_answer: bool = False


@dataclass
class PreferenceConfig:
    train_profiles: List[str] = field(
        default_factory=lambda: ["balanced", "accuracy-first", "cost-first", "latency-first"]
    )
    eval_profiles: List[str] = field(default_factory=lambda: ["balanced", "accuracy-first", "cost-first"])
    # A profile's own weights over the metrics (outcome, cost, latency, calls:<slot>), replacing the
    # built-in ones of that name (orchestra_ray/grpo/preferences.py) or naming a profile of its own,
    # e.g. {cost-first: {outcome: 0.3, cost: 0.6, latency: 0.1}}; used in training, evaluation, the
    # tokenizer corpus and serving alike.
    weights: Dict[str, Dict[str, float]] = field(default_factory=dict)


@dataclass
class LoraConfig:
    """Low-rank adapters (peft) in place of full-parameter training: the base weights stay frozen,
    rollout engines receive the merged policy, checkpoints hold the adapter and the merged policy."""

    rank: int = 0  # 0: full-parameter training
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])
    # What rollout engines receive at each version: "merged" weights (W + alpha/r B A, any engine),
    # or the "adapter" factors alone, which the engine applies itself (vLLM with enable_lora; the
    # transformers engine injects peft's adapters): bytes of the adapter instead of the whole model.
    publish: str = "merged"


@dataclass
class TrainerConfig:
    steps: int = 30
    lr: float = 1e-6
    weight_decay: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.28  # inf: no upper clip of the ratio (the only config number that may be infinite)
    kl_coef: float = 1e-4
    max_grad_norm: float = 1.0
    epochs: int = 1  # passes over each step's batch
    mini_batches: int = 1  # optimizer steps per pass
    micro_batch_size: int = 16  # sequences per forward pass when max_tokens_per_micro_batch is 0
    # Tokens per forward pass of the learner and the reference model: sequences are packed into one
    # row each pass, no padding (longest first into the first pass with room; a longer sequence
    # alone), and micro_batch_size is not used. 0: padded micro-batches of micro_batch_size sequences.
    # 4096 holds two longest default episodes; quickstart: 2048-8192 all ~70-80 % of padded's time.
    max_tokens_per_micro_batch: int = 4096
    checkpoint_every: int = 10
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    torch_threads: int = 2
    resources: Dict[str, float] = field(default_factory=dict)  # custom resources of the learner and reference
    # The learner group: N ranks (Ray actors, each with the resources above) in one placement group,
    # the policy sharded over them with FSDP2 and the reference model too (on the same ranks). 1: one
    # learner actor and a reference-model actor, unsharded.
    num_learners: int = 1
    placement_strategy: str = "PACK"  # Ray's: PACK, SPREAD, STRICT_PACK (one node), STRICT_SPREAD
    mixed_precision: str = "none"  # FSDP's compute dtype: none (the policy's dtype) or bfloat16
    cpu_offload: bool = False  # FSDP keeps sharded parameters, gradients and AdamW state in host memory
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    # Seconds a collective (or the group's placement at start) may wait before it fails: a rank that
    # dies or stalls never hangs the others forever.
    collective_timeout_s: float = 600.0
    publish_bucket_mb: float = 64.0  # a sharded version is gathered to rank 0 in buckets of this size
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class WarmStartConfig:
    enabled: bool = True
    examples: int = 256  # shared among the families by their sampling weights
    # family -> demonstrations in place of its share of `examples` (domain functions need many).
    family_examples: Dict[str, int] = field(default_factory=dict)
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 16
    # Which expert a FRAMES demonstration consults. "strongest": always zoo.strongest (the paper's
    # God-model habit). "preference": the expert the task's preference picks from what the system
    # prompt lists (the strongest for outcome, prices for cost, typical latency for latency), as a
    # prompted model would; the experts' accuracy on the data is left for RL to find. "cascade": the
    # experts in that listed order, the next one asked when the answer read says the expert does not
    # know (orchestra_ray/families/demos.py: consult, read, escalate; at most three). "best-cascade":
    # that reading in the order of the report's cascade baseline (the best mean reward under the task's
    # preference on the training split's recorded answers): experts' worth measured on training questions.
    demonstrator: str = "strongest"
    # Per family and profile, at least this share of demonstrations read an answer and call again
    # before answering (more training tasks drawn to find them; pipelines/warm_start.py). 0: as drawn.
    multi_call_share: float = 0.0
    # "preference", "cascade": 0 shows the best-listed order; above 0 draws softmax(listed score / this).
    demonstrator_temperature: float = 0.0


@dataclass
class EvalConfig:
    enabled: bool = True
    temperature: float = 0.0  # 0: greedy
    bootstrap_samples: int = 2000


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's, for the learner group
MIXED_PRECISION = ("none", "bfloat16")  # FSDP compute dtypes of a sharded learner (float16 would need loss scaling)
FAMILIES = ("frames", "domain", "arithmetic")  # the registry's names (orchestra_ray/families/registry.py)
DOMAIN_NAMES = ["airline", "retail", "bank", "weather"]


@dataclass
class DomainFamilyConfig:
    """ToolScale-style function-calling domains, generated offline on SQLite."""

    seed: int = 0
    tasks_per_domain: int = 120
    names: List[str] = field(default_factory=lambda: list(DOMAIN_NAMES))
    # Times the tiny base model's pre-training text holds each read lookup over the databases (a
    # request naming an id, the call, its result): how much of that text teaches copying an id.
    lookup_repeats: int = 1


@dataclass
class ArithmeticFamilyConfig:
    """Arithmetic and data problems, where the code interpreter is the cheapest correct tool."""

    problems: int = 600
    seed: int = 0


@dataclass
class FamiliesConfig:
    # Share of each step's tasks (and of the warm-start demonstrations) per family.
    weights: Dict[str, float] = field(default_factory=lambda: {"frames": 1.0})
    max_heldout: int = 0  # held-out problems per non-FRAMES family (0: all)
    domain: DomainFamilyConfig = field(default_factory=DomainFamilyConfig)
    arithmetic: ArithmeticFamilyConfig = field(default_factory=ArithmeticFamilyConfig)


@dataclass
class ToolsConfig:
    """The basic tools: a sandboxed code interpreter (a pool of tool workers), search over a local
    corpus, and the domain functions of the domain family."""

    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    code_pool: CodePoolConfig = field(default_factory=CodePoolConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    domain_call_latency_s: float = 0.05  # modelled: a domain function is a local database call


WEIGHT_TRANSPORTS = ("object_store", "collective")


@dataclass
class WeightsConfig:
    """How each new version reaches the rollout workers (actors/weight_transport.py, actors/collective_transport.py)."""

    # object_store: the learner puts each version into Ray's object store once, workers read it
    # (zero-copy on their node). collective: the learner's rank 0 broadcasts it over a gloo group of
    # its own to the workers, in buckets; a failed broadcast falls back to the object store.
    transport: str = "object_store"
    bucket_mb: float = 64.0  # collective: bytes per broadcast bucket
    timeout_s: float = 120.0  # collective: a group that forms or broadcasts no faster falls back
    # collective: workers on the sending rank's node copy each bucket from a shared-memory file (one
    # copy per worker) instead of receiving it over loopback TCP; false sends every worker the bytes
    shared_memory: bool = True


@dataclass
class PlanConfig:
    """The memory plan checked before any actor starts (orchestra_ray/policy/memory_plan.py)."""

    enforce: bool = True  # false: print the plan's refusal and start anyway
    # Memory of one device of each kind. None: the GPU's is read when the driver sees one (else that
    # kind is not checked); the host's is this machine's on an embedded cluster (else not checked).
    gpu_memory_gb: Optional[float] = None
    host_memory_gb: Optional[float] = None
    # The policy's config.json, where policy.model's is neither local nor one the package ships
    # (orchestra_ray/data/model_configs): the plan reads only the architecture, no weights.
    model_config: Optional[str] = None


@dataclass
class OrchestraConfig:
    run: RunConfig = field(default_factory=RunConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    preferences: PreferenceConfig = field(default_factory=PreferenceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    families: FamiliesConfig = field(default_factory=FamiliesConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def serve_route_prefix(name: str, serve: ServeConfig) -> str:
    return serve.route_prefix or f"/experts/{name}"
