"""Copy probes over the mixed config's domain tasks, without Ray: each probe cuts the warm start's
own demonstration of a task just where the value is written; `bench copy` measures a policy on them
and writes its rates."""

import json
import os

import pytest

from orchestra_ray.rollout.chat import ChatFormat, user_message
from orchestra_ray.config_load import load_config
from orchestra_ray.families.copy_probe import CALL_TO_RESULT, REQUEST_TO_CALL, CopyProbe, copied, copy_probes, copy_rates
from orchestra_ray.families.demos import scripted_demo
from orchestra_ray.families.task import DOMAIN, eval_tasks
from orchestra_ray.policy.tiny_model import train_tokenizer
from pipelines.cli import main
from pipelines.families import load_families
from pipelines.zoo import added_tokens, load_zoo, tokenizer_corpus

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs")
SMALL = ["data.max_train_questions=40", "data.max_heldout_questions=10", "families.domain.tasks_per_domain=24"]


@pytest.fixture(scope="module")
def mixed(frames_dir):
    cfg = load_config(os.path.join(CONFIGS, "mixed.yaml"), [f"data.path={frames_dir}", *SMALL])
    zoo = load_zoo(cfg)
    families = load_families(cfg, zoo)
    tok = train_tokenizer(tokenizer_corpus(zoo, cfg, families), cfg.policy.tiny.vocab_size, added_tokens(zoo, families))
    return zoo, families, ChatFormat(tok)


def episodes(zoo, families):
    for t in eval_tasks(families.heldout[DOMAIN], ["balanced"], zoo.slots):
        domain = families.domains[t.toolset.split(":", 1)[1]]
        yield t, domain, families.toolsets[t.toolset][0], user_message(t.question, t.preference), families.reference[t.question_id]


def test_each_probe_stops_where_the_demonstration_writes_the_value(mixed):
    zoo, families, chat = mixed
    kinds = {}
    for t, domain, system, user, calls in episodes(zoo, families):
        demo = chat.decode(scripted_demo(chat, system, user, calls, domain.new_env().call)["token_ids"])
        probes = copy_probes(chat, system, user, calls, domain.new_env().call)
        for p in probes:
            prompt = chat.decode(p.prompt_ids)
            assert demo.startswith(prompt + p.target), (t.question_id, p.kind, p.target)
            assert '"' not in p.target and p.target.strip() == p.target.lstrip()  # the bare value
            if p.kind == REQUEST_TO_CALL:
                assert p.target.lstrip() in user and prompt.endswith(('"', ":")) and p.function in [c[0] for c in calls]
            else:  # the value is read back inside a tool response
                assert prompt.rindex("<tool_response>") > prompt.rindex("<tool_call>")
            kinds.setdefault(domain.name, set()).add(p.kind)
    # Every domain's held-out requests carry values the gold calls copy, and read calls repeat them.
    assert set(kinds) == {"airline", "retail", "bank", "weather"}
    for name, got in kinds.items():
        assert REQUEST_TO_CALL in got, name
    assert any(CALL_TO_RESULT in got for got in kinds.values())


def test_a_value_absent_from_the_request_is_not_a_request_probe(mixed):
    zoo, families, chat = mixed
    t, domain, system, user, calls = next(episodes(zoo, families))
    name, args = calls[0]
    invented = {k: "Z9999Q" if isinstance(v, str) else 987654321 for k, v in args.items()}
    probes = copy_probes(chat, system, user, [(name, invented), ("answer", {"text": "Done."})], lambda n, a: "no match")
    assert [p for p in probes if p.kind == REQUEST_TO_CALL] == []
    assert [p for p in probes if p.kind == CALL_TO_RESULT] == []


def test_copied_needs_the_whole_value_and_no_more():
    assert copied("K3177", 'K3177"}}')
    assert copied("K3177", "K3177")
    assert copied("250", "250, ")
    assert not copied("K31", "K3177")
    assert not copied("K3177", "K3931")
    assert not copied("250", "250.5")
    assert not copied("K3177", " K3177")


def test_copy_rates_count_per_kind():
    probes = [CopyProbe(REQUEST_TO_CALL, "f", [1], "a"), CopyProbe(REQUEST_TO_CALL, "f", [1], "b"),
              CopyProbe(CALL_TO_RESULT, "f", [1], "c")]
    rates = copy_rates(probes, [True, False, False])
    assert rates[REQUEST_TO_CALL] == {"hits": 1, "probes": 2, "rate": 0.5}
    assert rates[CALL_TO_RESULT] == {"hits": 0, "probes": 1, "rate": 0.0}
    assert copy_rates(probes[:2], [True, True]).keys() == {REQUEST_TO_CALL}
    with pytest.raises(ValueError, match="2 results for 3 probes"):
        copy_rates(probes, [True, False])


def test_bench_copy_measures_a_policy_on_both_splits(frames_dir, tmp_path, capsys):
    args = ["bench", "copy", f"data.path={frames_dir}", *SMALL, f"policy.cache_dir={tmp_path / 'cache'}",
            "policy.tiny.pretrain_steps=20", "--tasks", "4", "--root", str(tmp_path)]
    assert main(args) == 0
    (d,) = [e for e in os.listdir(tmp_path) if e.startswith("bench-copy-")]
    with open(tmp_path / d / "bench.json") as f:
        result = json.load(f)
    assert result["policy"].startswith(str(tmp_path / "cache"))
    for split in ("train", "heldout"):
        s = result["splits"][split]
        assert s["tasks"] == 4
        r = s["rates"][REQUEST_TO_CALL]
        assert r["probes"] >= 4 and 0 <= r["hits"] <= r["probes"] and r["rate"] == r["hits"] / r["probes"]
        assert sum(v[REQUEST_TO_CALL]["probes"] for v in s["per_domain"].values() if REQUEST_TO_CALL in v) == r["probes"]
    out = capsys.readouterr().out
    assert "request->call" in out and "heldout" in out and "bench.json" in out


def test_bench_copy_refuses_a_config_without_domain_tasks(frames_dir, tmp_path, capsys):
    assert main(["bench", "copy", "quickstart", f"data.path={frames_dir}", "--root", str(tmp_path)]) == 2
    assert "the config trains no domain family" in capsys.readouterr().err
