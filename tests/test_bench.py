"""The benchmarks at tiny sizes on a real local Ray cluster: each writes the fields it promises,
with sane values (positive times, shares summing to one). Speed itself is not asserted."""

import json
import math
import os

import numpy as np
import pytest
import ray
import torch

from pipelines.cli import main


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def read_bench(root, name):
    (d,) = [e for e in os.listdir(root) if e.startswith(f"bench-{name}-")]
    with open(os.path.join(root, d, "bench.json")) as f:
        return json.load(f)


def test_tied_embeddings_travel_once_and_reach_the_receiver(cluster):
    from pipelines.bench.weight_sync_actors import random_model
    from actors.weight_transport import WeightStore, publish_model, pull_if_newer, state_to_numpy
    from orchestra_ray.policy.engine import HFEngine
    from pipelines.bench.weight_sync import TINY, qwen3_config

    config = qwen3_config(TINY)
    sender = random_model(config, seed=0)
    assert sender.lm_head.weight.data_ptr() == sender.model.embed_tokens.weight.data_ptr()
    sent = state_to_numpy(sender)
    assert "lm_head.weight" not in sent and "model.embed_tokens.weight" in sent
    store = WeightStore.remote()
    publish_model(store, sender, 0)
    version, weights = pull_if_newer(store, -1)
    assert version == 0 and pull_if_newer(store, 0) is None
    for share in (False, True):
        receiver = random_model(config, seed=1)
        HFEngine(receiver, pad_token_id=0, share_weights=share).load_weights(weights)
        for (name, a), b in zip(sender.state_dict().items(), receiver.state_dict().values()):
            assert np.array_equal(a.numpy(), b.numpy()), name
        # Shared: the receiver's parameters are the object-store arrays themselves, not copies.
        embed = weights["model.embed_tokens.weight"]
        assert (receiver.lm_head.weight.data_ptr() == embed.ctypes.data) is share
    # The learner packs the next version into the same buffer: what was published stays as it was.
    before = weights["model.norm.weight"].copy()
    with torch.no_grad():
        sender.model.norm.weight.add_(1.0)
    publish_model(store, sender, 1)
    version, newer = pull_if_newer(store, 0)
    assert version == 1 and np.array_equal(weights["model.norm.weight"], before)
    assert np.array_equal(newer["model.norm.weight"], before + 1.0)
    ray.kill(store)


def test_weight_sync_bench_reports_sync_copy_and_ratio(cluster, tmp_path, capsys):
    from pipelines.bench import weight_sync as bench_weight_sync

    bench_weight_sync.SIZES["tiny"] = bench_weight_sync.TINY
    try:
        assert main(["bench", "weight-sync", "--sizes", "tiny", "--reps", "2", "--workers", "2", "--root", str(tmp_path),
                     "--modes", "share,copy,collective"]) == 0
    finally:
        del bench_weight_sync.SIZES["tiny"]
    out = read_bench(tmp_path, "weight-sync")
    assert [r["mode"] for r in out["results"]] == ["share", "copy", "collective"]
    for r in out["results"]:
        assert r["model"] == "tiny" and r["workers"] == 2 and r["reps"] == 2
        assert r["parameters"] > 0 and r["bytes"] == 4 * r["parameters"]  # float32, the tied embedding once
        assert r["sync_s"] > 0 and r["copy_s"] > 0 and math.isclose(r["ratio"], r["sync_s"] / r["copy_s"])
        assert all(v > 0 for v in r["parts_s"].values()) and len(r["sync_s_all"]) == 2
        # Warm-up rounds are reported apart and left out of the median.
        assert len(r["warmup_sync_s"]) == out["warmup_rounds"] == bench_weight_sync.WARMUP_ROUNDS
    assert out["machine"]["cpus"] >= 1
    assert "ratio" in capsys.readouterr().out


def test_learner_bench_sets_the_memory_plan_beside_the_measured_peak(cluster, tmp_path):
    assert main(["bench", "learner", "--sizes", "tiny", "--learners", "1", "--steps", "1", "--samples", "4",
                 "--tokens", "64", "--micro-batch-size", "2", "--root", str(tmp_path)]) == 0
    (rank,) = read_bench(tmp_path, "learner")["results"][0]["ranks"]
    assert rank["planned_bytes"] > 0 and rank["peak_rss_bytes"] > 0
    assert abs(rank["plan_error"]) < 0.25, "the plan's estimate of the learner is within 25 % of its peak"


def test_weight_sync_bench_rejects_an_unknown_size(cluster, tmp_path, capsys):
    assert main(["bench", "weight-sync", "--sizes", "7B", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model size(s) 7B" in err and len(err.strip().splitlines()) == 1


def test_sandbox_bench_reports_latency_ratio_and_pool_throughput(cluster, tmp_path):
    assert main(["bench", "sandbox", "--calls", "2", "--pool-calls", "4", "--pool-workers", "1", "--root", str(tmp_path)]) == 0
    out = read_bench(tmp_path, "sandbox")
    m = out["median_s"]
    assert all(m[k] > 0 for k in ("bare_subprocess", "sandboxed", "pool_call"))
    assert math.isclose(out["latency_ratio"], m["sandboxed"] / m["bare_subprocess"])
    assert out["pool"]["calls"] == 4 and out["pool"]["calls_per_s"] > 0


def test_breakdown_bench_shares_cover_the_step(cluster, tmp_path, frames_dir):
    args = ["bench", "breakdown", "quickstart", f"data.path={frames_dir}", "data.max_train_questions=16", "data.max_heldout_questions=4",
            f"policy.cache_dir={tmp_path / 'cache'}", "policy.tiny.pretrain_steps=5", "policy.tiny.hidden_size=32",
            "policy.tiny.intermediate_size=64", "policy.tiny.head_dim=16",
            "rollout.tasks_per_step=2", "rollout.group_size=2", "rollout.max_turns=2", "rollout.max_new_tokens=8",
            "warm_start.examples=4", "warm_start.batch_size=4",
            # Keep every sample, so that each step trains and publishes.
            "reward.filter_zero_variance=false", "reward.filter_format_errors=false", "reward.filter_no_answer=false",
            "--steps", "2", "--root", str(tmp_path)]
    assert main(args) == 0
    out = read_bench(tmp_path, "breakdown")
    assert out["steps_counted"] == [2] and [s["step"] for s in out["steps"]] == [1, 2]
    shares = out["shares"]
    assert set(shares) == {"generation", "tools", "rollout_other", "weight_sync", "reference_logprobs",
                           "learner_update", "driver", "waiting"}
    assert all(v >= 0 for v in shares.values()) and math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6)
    # Every step generates, trains and publishes: those stages take time.
    for s in out["steps"]:
        assert s["wall_s"] > 0 and s["samples"] == 4
        assert all(s["seconds"][k] > 0 for k in ("generation", "learner_update", "weight_sync", "reference_logprobs"))
        assert math.isclose(sum(s["seconds"].values()), s["wall_s"], rel_tol=1e-6)
    assert out["orchestration_overhead"] == shares["waiting"]
    assert out["turns_per_episode"] == out["steps"][1]["turns"] >= 1
    assert out["generation_s_per_step"] == out["steps"][1]["seconds"]["generation"]


def test_trl_bench_runs_trl_and_both_modes_on_the_same_work(cluster, tmp_path, frames_dir):
    from orchestra_ray.rollout.chat import ChatFormat, tool_call_text
    from orchestra_ray.config_load import load_config
    from orchestra_ray.rollout.episode import EpisodeLimits
    from orchestra_ray.experts.base import ExpertRequest
    from orchestra_ray.grpo.preferences import COST, LATENCY, OUTCOME, calls_metric
    from orchestra_ray.grpo.reward import orchestration_reward
    from orchestra_ray.families.task import TaskSampler
    from pipelines.bench.trl_grpo import routing_overrides, routing_rewards
    from pipelines.cli import _config_path
    from pipelines.families import load_families
    from pipelines.zoo import load_zoo
    from transformers import AutoTokenizer

    small = [f"data.path={frames_dir}", "data.max_train_questions=16", "data.max_heldout_questions=4",
             f"policy.cache_dir={tmp_path / 'cache'}", "policy.tiny.pretrain_steps=5", "policy.tiny.hidden_size=32",
             "policy.tiny.intermediate_size=64", "policy.tiny.head_dim=16", "rollout.tasks_per_step=2",
             "rollout.group_size=2", "rollout.max_new_tokens=8"]
    assert main(["bench", "trl", "quickstart", *small, "--steps", "2", "--reps", "1", "--root", str(tmp_path)]) == 0
    out = read_bench(tmp_path, "trl")
    assert out["work"]["samples_per_step"] == 4 and out["work"]["steps"] == 2
    for side in ("trl", "sync", "async"):
        assert len(out["seconds_per_step"][side]) == 1 and out["median_seconds_per_step"][side] > 0
        assert math.isclose(out["median_samples_per_s"][side] * out["median_seconds_per_step"][side], 4)
    assert math.isclose(out["speedup_vs_trl"]["async"],
                        out["median_seconds_per_step"]["trl"] / out["median_seconds_per_step"]["async"])
    assert out["max_staleness_seen"]["sync"] == 0 and out["max_staleness_seen"]["async"] <= 1

    # TRL's completions are scored by the project's own episode code: an answer relayed from an
    # expert gets the orchestration reward of its recorded call, a malformed one gets 0.
    cfg = load_config(_config_path("quickstart"), [*small, *routing_overrides(2, 2, 2, 8)])
    zoo = load_zoo(cfg)
    families = load_families(cfg, zoo)
    (policy,) = [d for d in os.listdir(tmp_path / "cache")]
    chat = ChatFormat(AutoTokenizer.from_pretrained(str(tmp_path / "cache" / policy)))
    task = TaskSampler(zoo.train, ["cost-first"], zoo.slots, 0).next_tasks(1, 1)[0]
    slots = [zoo.slots[0], zoo.slots[-1], zoo.slots[0]]
    completions = [chat.encode(tool_call_text("answer", {"expert": s})) for s in slots[:2]] + [chat.encode("no call")]
    limits = EpisodeLimits(1, 64, 4096, cfg.zoo.max_response_chars)
    got = routing_rewards(chat, families.toolsets, zoo.slots, limits, zoo.experts, [task] * 3, completions)
    metrics = []
    for s in slots[:2]:
        resp = zoo.experts[s].respond(ExpertRequest(task.question_id, [{"role": "user", "content": task.question}]))
        m = {calls_metric(x): float(x == s) for x in zoo.slots}
        metrics.append({**m, OUTCOME: float(resp.grade == "A"), COST: resp.cost, LATENCY: resp.latency})
    metrics.append({**{calls_metric(x): 0.0 for x in zoo.slots}, OUTCOME: 0.0, COST: 0.0, LATENCY: 0.0})
    assert got == pytest.approx(orchestration_reward(metrics, task.preference.weights))
    assert got[2] == 0.0


def test_learner_parameters_live_in_the_buffer_that_is_published():
    from pipelines.bench.weight_sync_actors import random_model
    from actors.weight_transport import flatten_parameters, pack_state, state_to_numpy, unpack_state
    from pipelines.bench.weight_sync import TINY, qwen3_config

    model = random_model(qwen3_config(TINY), seed=0)
    before = {k: v.copy() for k, v in state_to_numpy(model).items()}
    assert flatten_parameters(model)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    first = pack_state(model)
    assert {k: v.tolist() for k, v in unpack_state(first).items()} == {k: v.tolist() for k, v in before.items()}
    # An optimizer step updates the parameters in place, i.e. in the buffer: publishing packs nothing.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 100, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    second = pack_state(model)
    assert second["data"] is first["data"]
    now = state_to_numpy(model)
    sent = unpack_state(second)
    assert all(np.array_equal(sent[k], now[k]) for k in now)
    assert all(not np.array_equal(sent[k], before[k]) for k in before)
    # A parameter given new storage is noticed: the state is packed (copied) instead.
    with torch.no_grad():
        model.lm_head.weight.data = model.lm_head.weight.data.clone() + 1.0
    third = pack_state(model)
    assert third["data"] is not first["data"]
    assert np.array_equal(unpack_state(third)["model.embed_tokens.weight"], state_to_numpy(model)["model.embed_tokens.weight"])


def test_a_model_not_in_float32_is_packed_not_flattened():
    from pipelines.bench.weight_sync_actors import random_model
    from actors.weight_transport import flatten_parameters, pack_state, state_to_numpy, unpack_state
    from pipelines.bench.weight_sync import TINY, qwen3_config

    model = random_model(qwen3_config(TINY), seed=0).to(torch.bfloat16)
    ptr = model.lm_head.weight.data_ptr()
    assert not flatten_parameters(model) and model.lm_head.weight.data_ptr() == ptr
    sent = unpack_state(pack_state(model))
    assert all(np.array_equal(sent[k], v) and sent[k].dtype == np.float32 for k, v in state_to_numpy(model).items())


def test_generate_bench_runs_both_caches_to_the_same_tokens(tmp_path):
    """`orchestra-ray bench generate`: one call per KV cache in its own process, split as a rollout
    worker splits it, every row decoding the asked tokens; greedy, both caches give the same tokens
    (no Ray)."""
    assert main(["bench", "generate", "quickstart", f"policy.cache_dir={tmp_path / 'cache'}", "policy.tiny.pretrain_steps=20",
                 "rollout.max_batch_size=3", "--prompts", "4", "--new-tokens", "6", "--root", str(tmp_path)]) == 0
    out = read_bench(tmp_path, "generate")
    assert out["same_tokens"] is True and out["prompts"] == 4 and out["prompt_tokens"][0] > 100
    assert (out["max_batch_size"], out["dtype"], out["device"]) == (3, "float32", "cpu")
    assert list(out["variants"]) == ["preallocated KV buffers", "concatenating cache (transformers)"]
    for r in out["variants"].values():
        assert r["generated_tokens"] == 4 * 6 and r["seconds"] > 0
        assert r["peak_rss_gb"] >= r["rss_after_load_gb"] > 0
