"""Expert prices: list prices from genai-prices (shipped data, no network), per-slot overrides that
win, a clear one-line ConfigError for a model with no price, and quickstart costs that match the
figures the FRAMES replay data documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from orchestra_ray.config import ExpertSlotConfig
from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError
from orchestra_ray.experts.base import ExpertRequest
from orchestra_ray.families.frames import load_responses
from orchestra_ray.experts.pricing import PriceTable, library_price, slot_price

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "pipelines", "configs", "quickstart.yaml")


def quickstart(frames_dir, *overrides):
    return load_config(QUICKSTART, [f"data.path={frames_dir}", *overrides])


def test_quickstart_slots_resolve_to_list_prices(frames_dir):
    cfg = quickstart(frames_dir)
    table = PriceTable.from_slots(cfg.zoo.experts)
    got = {name: (p.input_per_million, p.output_per_million) for name, p in table.prices.items()}
    assert got == {
        "claude-sonnet-4": pytest.approx((3.0, 15.0)),
        "gpt-5-mini": pytest.approx((0.25, 2.0)),
        "grok-3-mini": pytest.approx((0.3, 0.5)),
        "qwen3-8b": pytest.approx((0.05, 0.2)),  # self-hosted: the YAML's own rate
    }
    # The hosted slots carry no rate of their own: these numbers come from the price list.
    assert all(e.input_price is None and e.output_price is None for e in cfg.zoo.experts[:3])


def test_quickstart_costs_match_the_documented_figures(frames_dir):
    """The data set's README gives the cost per question at list prices with about 60 input tokens."""
    cfg = quickstart(frames_dir)
    table = PriceTable.from_slots(cfg.zoo.experts)
    arms = {e.name: e.arm for e in cfg.zoo.experts}
    records = load_responses(frames_dir, list(arms.values()))
    cents = {
        slot: 100 * sum(table.cost(slot, 60, r.output_tokens) for r in records[arm].values()) / len(records[arm])
        for slot, arm in arms.items()
    }
    assert cents["claude-sonnet-4"] == pytest.approx(2.6, rel=0.1)
    assert cents["gpt-5-mini"] == pytest.approx(0.27, rel=0.1)
    assert cents["grok-3-mini"] == pytest.approx(0.04, rel=0.15)
    assert cents["qwen3-8b"] < cents["grok-3-mini"] < cents["gpt-5-mini"] < cents["claude-sonnet-4"]


def test_replay_expert_bills_with_library_prices(frames_dir):
    from pipelines.zoo import load_zoo

    zoo = load_zoo(quickstart(frames_dir, "data.max_train_questions=4", "data.max_heldout_questions=2"))
    q = zoo.train[0]
    r = zoo.experts["gpt-5-mini"].respond(ExpertRequest(q.question_id, [{"role": "user", "content": q.problem}]))
    assert r.cost == pytest.approx((r.input_tokens * 0.25 + r.output_tokens * 2.0) / 1e6)
    assert "$0.25 / $2.00" in zoo.system_prompt  # the policy is shown the rates it is billed at


def test_price_list_needs_no_network():
    """Looked up in a process with no network at all (its own empty network namespace)."""
    code = textwrap.dedent(
        """
        import json, socket
        from orchestra_ray.config import ExpertSlotConfig
        from orchestra_ray.experts.pricing import slot_price
        try:
            socket.create_connection(("pypi.org", 443), timeout=3)
            online = True
        except OSError:
            online = False
        p = slot_price(ExpertSlotConfig(name="gen", arm="x", price_model="gpt-5"))
        print(json.dumps([online, p.input_per_million, p.output_per_million]))
        """
    )
    out = subprocess.run(
        ["bwrap", "--unshare-net", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
         "--chdir", REPO, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    online, inp, outp = json.loads(out.stdout.strip().splitlines()[-1])
    assert online is False
    assert (inp, outp) == pytest.approx((1.25, 10.0))


def test_model_name_is_priced_when_no_price_model_is_given():
    # A live slot is priced as the model it calls; a replay slot as its name.
    assert slot_price(ExpertSlotConfig(name="x", backend="openai", model="gpt-5-mini")).output_per_million == pytest.approx(2.0)
    assert slot_price(ExpertSlotConfig(name="grok-3-mini", arm="a")).input_per_million == pytest.approx(0.3)


def test_override_wins_over_the_list():
    one = slot_price(ExpertSlotConfig(name="gen", arm="x", price_model="gpt-5", input_price=0.5))
    assert (one.input_per_million, one.output_per_million) == pytest.approx((0.5, 10.0))
    both = slot_price(ExpertSlotConfig(name="gen", arm="x", price_model="gpt-5", input_price=0.5, output_price=1.5))
    assert (both.input_per_million, both.output_per_million) == (0.5, 1.5)
    # Zero is a price (a free local model), not "unset".
    free = slot_price(ExpertSlotConfig(name="gen", arm="x", price_model="gpt-5", input_price=0.0, output_price=0.0))
    assert (free.input_per_million, free.output_per_million) == (0.0, 0.0)


def test_full_override_needs_no_listed_model():
    p = slot_price(ExpertSlotConfig(name="mine", backend="serve", model="/models/my-finetune", input_price=0.1, output_price=0.4))
    assert (p.input_per_million, p.output_per_million) == (0.1, 0.4)


def test_provider_is_respected():
    assert library_price("claude-sonnet-4", "anthropic") == pytest.approx((3.0, 15.0))
    with pytest.raises(LookupError):
        library_price("claude-sonnet-4", "openai")


def test_cost_and_modelled_latency():
    table = PriceTable.from_slots([ExpertSlotConfig(name="gen", arm="x", input_price=2.0, output_price=8.0,
                                                    output_tokens_per_s=50.0, time_to_first_token_s=0.4)])
    assert table.cost("gen", 1000, 500) == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert table.latency("gen", 100) == pytest.approx(0.4 + 100 / 50.0)


def _write(tmp_path, slot_yaml: str) -> str:
    p = tmp_path / "zoo.yaml"
    p.write_text("zoo:\n  strongest: a\n  experts:\n" + textwrap.indent(textwrap.dedent(slot_yaml), "    "))
    return str(p)


def _config_error(path: str, frames_dir: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, [f"data.path={frames_dir}"])
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_self_hosted_model_without_price_names_the_key(tmp_path, frames_dir):
    path = _write(tmp_path, """\
        - name: a
          arm: claude-sonnet4_budget4096
          price_model: claude-sonnet-4
        - name: local
          backend: serve
          model: /models/my-finetune
        """)
    msg = _config_error(path, frames_dir)
    assert "zoo.experts.1.price_model" in msg and "/models/my-finetune" in msg and "input_price" in msg


def test_unlisted_price_model_names_the_key(tmp_path, frames_dir):
    path = _write(tmp_path, """\
        - name: a
          arm: claude-sonnet4_budget4096
          price_model: claude-sonnet-99
        """)
    msg = _config_error(path, frames_dir)
    assert "zoo.experts.0.price_model" in msg and "claude-sonnet-99" in msg


def test_wrong_provider_names_the_provider(tmp_path, frames_dir):
    path = _write(tmp_path, """\
        - name: a
          arm: claude-sonnet4_budget4096
          price_model: claude-sonnet-4
          price_provider: openai
        """)
    msg = _config_error(path, frames_dir)
    assert "zoo.experts.0.price_model" in msg and "'openai'" in msg


def test_negative_override_names_the_key(tmp_path, frames_dir):
    path = _write(tmp_path, """\
        - name: a
          arm: claude-sonnet4_budget4096
          input_price: -1
          output_price: 1
        """)
    assert "zoo.experts.0.input_price" in _config_error(path, frames_dir)
