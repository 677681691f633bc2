"""The offline function-calling domains (no Ray): every generated task's gold actions verify and
doing nothing does not; generation is deterministic; the filters drop failing and no-effect
drafts; tasks round-trip through tau2-bench's task format and public-format files load; bad files,
bad arguments and broken rules give clear messages; plausible wrong actions fail verification."""

import copy
import json
import os
import pickle
import subprocess
import sys

import pytest

from orchestra_ray.families.domains import (
    DOMAIN_NAMES,
    Action,
    Domain,
    DomainToolError,
    filter_tasks,
    generate_domains,
    gold_hash,
    load_tau2_tasks,
    verify,
    write_tau2_tasks,
)
from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.tasks import draft_task
from orchestra_ray.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS_PER_DOMAIN = 120


@pytest.fixture(scope="module")
def generated():
    return generate_domains(0, TASKS_PER_DOMAIN)


@pytest.fixture(scope="module")
def domains(generated):
    return generated[0]


@pytest.fixture(scope="module")
def tasks(generated):
    return generated[1]


def _rows(domain: Domain, sql: str, params=()):
    return Database.from_bytes(domain.db_bytes).all(sql, params)


def _one_task(tasks, domain, purpose):
    return next(t for t in tasks[domain] if t.purpose == purpose)


def test_four_domains_with_typed_read_and_write_functions(generated):
    domains, tasks, stats = generated
    assert DOMAIN_NAMES == ("airline", "retail", "bank", "weather")
    assert tuple(domains) == DOMAIN_NAMES and tuple(tasks) == DOMAIN_NAMES
    for name, dom in domains.items():
        assert 5 <= len(dom.tools) <= 8, name
        assert dom.description
        writes = [f for f in dom.functions if f.writes]
        assert writes and len(writes) < len(dom.functions), f"{name} needs reads and writes"
        for spec in dom.tools:
            params = spec.parameters
            assert params["type"] == "object" and params["additionalProperties"] is False
            assert set(params["required"]) == set(params["properties"]) and params["required"]
            assert all(p["type"] in ("string", "integer") and p["description"] for p in params["properties"].values())
        s = stats[name]
        assert s["kept"] == len(tasks[name]) == TASKS_PER_DOMAIN
        assert s["generated"] == s["dropped_failing"] + s["dropped_no_effect"] + s["dropped_duplicate"] + s["kept"]
        # The templates make mistakes on purpose, so the failing-gold filter has real work.
        assert s["dropped_failing"] > 0


def test_every_task_verifies_with_its_gold_actions_and_fails_with_none(domains, tasks):
    for name, dom in domains.items():
        initial = dom.initial_hash()
        ids = [t.task_id for t in tasks[name]]
        assert ids == [f"{name}-{i:04d}" for i in range(TASKS_PER_DOMAIN)]
        end_states = set()
        for t in tasks[name]:
            assert t.domain == name and t.instruction
            writes = [a for a in t.gold_actions if dom.function(a.name).writes]
            assert 1 <= len(writes) <= 3, t.task_id
            # No user simulator: the request itself carries every value the gold actions use.
            for a in t.gold_actions:
                for value in a.arguments.values():
                    assert str(value) in t.instruction, (t.task_id, a, t.instruction)
            assert verify(dom, t, t.gold_actions), t.task_id
            assert not verify(dom, t, []), t.task_id
            h = gold_hash(dom, t)
            assert h != initial
            end_states.add(h)
        assert len(end_states) == TASKS_PER_DOMAIN, f"{name} has tasks with the same end state"


def test_tasks_vary_so_the_request_decides_function_and_arguments(domains, tasks):
    for name, dom in domains.items():
        first_writes = [next(a for a in t.gold_actions if dom.function(a.name).writes) for t in tasks[name]]
        used = {a.name for a in first_writes}
        assert len(used) >= 4, f"{name} tasks use only {used}"
        assert len({t.purpose for t in tasks[name]}) >= 6
        assert len({json.dumps(a.arguments, sort_keys=True) for a in first_writes}) > 0.8 * TASKS_PER_DOMAIN
        # Some tasks read before they write.
        assert any(not dom.function(t.gold_actions[0].name).writes for t in tasks[name]), name


def test_generation_is_deterministic_for_a_seed(generated):
    domains, tasks, stats = generated
    domains2, tasks2, stats2 = generate_domains(0, TASKS_PER_DOMAIN)
    assert stats2 == stats
    for name in DOMAIN_NAMES:
        assert domains2[name].initial_hash() == domains[name].initial_hash()
        assert tasks2[name] == tasks[name]
    other_domains, other_tasks, _ = generate_domains(1, TASKS_PER_DOMAIN)
    assert other_domains["bank"].initial_hash() != domains["bank"].initial_hash()
    assert [t.instruction for t in other_tasks["retail"]] != [t.instruction for t in tasks["retail"]]
    # Another process, with other string hashing, builds the same databases and tasks.
    script = ("import json; from orchestra_ray.families.domains import generate_domains, gold_hash; d, t, _ = generate_domains(0, 30); "
              "print(json.dumps({n: [d[n].initial_hash(), [[x.task_id, x.instruction, gold_hash(d[n], x)] for x in t[n]]] for n in d}))")
    for hash_seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONHASHSEED=hash_seed))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {n: [domains[n].initial_hash(), [[x.task_id, x.instruction, gold_hash(domains[n], x)]
                                                                          for x in tasks[n][:30]]] for n in DOMAIN_NAMES}
    # A smaller run is a prefix of a larger one for the same seed.
    _, small, _ = generate_domains(0, 10)
    assert all(small[n] == tasks[n][:10] for n in DOMAIN_NAMES)


def test_a_domain_is_shipped_to_workers_by_pickling(domains):
    dom = pickle.loads(pickle.dumps(domains["bank"]))
    assert dom.initial_hash() == domains["bank"].initial_hash()
    account = _rows(dom, "SELECT account_id FROM accounts ORDER BY account_id")[0]["account_id"]
    assert json.loads(dom.new_env().call("get_balance", {"account_id": account}))["account_id"] == account


def test_filters_drop_failing_no_effect_and_duplicate_drafts(domains):
    dom = domains["airline"]
    cancelled = _rows(dom, "SELECT reservation_id FROM reservations WHERE status = 'cancelled' ORDER BY reservation_id")[0]["reservation_id"]
    booked = [r["reservation_id"] for r in _rows(dom, "SELECT reservation_id FROM reservations WHERE status = 'booked' ORDER BY reservation_id")]
    customer = _rows(dom, "SELECT customer_id, email FROM customers ORDER BY customer_id")[0]

    def cancel(rid):
        return Action("cancel_reservation", {"reservation_id": rid})

    drafts = [
        draft_task("airline", "ok", f"Cancel {booked[0]}.", "", [cancel(booked[0])]),
        draft_task("airline", "fails", f"Cancel {cancelled}.", "", [cancel(cancelled)]),
        # The first action succeeds, the second is refused: the task as a whole cannot be done.
        draft_task("airline", "fails later", f"Cancel {booked[1]} twice.", "", [cancel(booked[1]), cancel(booked[1])]),
        draft_task("airline", "no effect", "Keep my email.", "",
                   [Action("update_email", {"customer_id": customer["customer_id"], "email": customer["email"]})]),
        draft_task("airline", "reads only", "Look me up.", "", [Action("get_customer", {"customer_id": customer["customer_id"]})]),
        draft_task("airline", "duplicate", f"Please cancel {booked[0]}.", "",
                   [Action("get_reservation", {"reservation_id": booked[0]}), cancel(booked[0])]),
        draft_task("airline", "ok too", f"Cancel {booked[2]}.", "", [cancel(booked[2])]),
    ]
    kept, stats = filter_tasks(dom, drafts)
    assert stats == {"generated": 7, "dropped_failing": 2, "dropped_no_effect": 2, "dropped_duplicate": 1, "kept": 2}
    assert [(t.task_id, t.purpose) for t in kept] == [("airline-0000", "ok"), ("airline-0001", "ok too")]
    # The replays ran on copies: the domain's database is untouched.
    assert dom.new_env().call("get_reservation", {"reservation_id": booked[0]}).count('"booked"') == 1
    # With a limit the filter stops drawing drafts once enough are kept.
    kept, stats = filter_tasks(dom, iter(drafts), limit=1)
    assert len(kept) == 1 and stats["generated"] == 1


def test_tau2_round_trip_keeps_tasks_and_gold_hashes(domains, tasks, tmp_path):
    for name, dom in domains.items():
        path = str(tmp_path / name / "tasks.json")
        write_tau2_tasks(path, tasks[name])
        loaded = load_tau2_tasks(path, dom)
        assert loaded == tasks[name]
        assert [gold_hash(dom, t) for t in loaded] == [gold_hash(dom, t) for t in tasks[name]]
    raw = json.load(open(tmp_path / "bank" / "tasks.json"))[0]
    assert raw["id"] == "bank-0000" and raw["ticket"] == tasks["bank"][0].instruction
    assert set(raw["user_scenario"]["instructions"]) == {"domain", "reason_for_call", "known_info", "unknown_info", "task_instructions"}
    assert raw["user_scenario"]["instructions"]["domain"] == "bank"
    assert raw["description"]["purpose"] == tasks["bank"][0].purpose
    assert raw["evaluation_criteria"]["reward_basis"] == ["DB"]
    action = raw["evaluation_criteria"]["actions"][0]
    assert {"action_id", "name", "arguments", "requestor"} <= set(action) and action["requestor"] == "assistant"


def _public_task(order_id, **overrides):
    """A task as tau2-bench's public files write it: no ticket, a structured scenario for a user
    simulator, actions without a requestor, and reward basis DB plus COMMUNICATE."""
    task = {
        "id": "7",
        "description": {"purpose": "Cancel a pending order.", "relevant_policies": None, "notes": None},
        "user_scenario": {
            "persona": None,
            "instructions": {
                "task_instructions": "If the agent asks, confirm the cancellation.",
                "domain": "retail",
                "reason_for_call": f"You want to cancel order {order_id}.",
                "known_info": "You are a returning customer.",
                "unknown_info": None,
            },
        },
        "initial_state": None,
        "evaluation_criteria": {
            "actions": [
                {"action_id": "7_0", "name": "get_order", "arguments": {"order_id": order_id}, "info": None},
                {"action_id": "7_1", "name": "cancel_order", "arguments": {"order_id": order_id}, "info": None},
            ],
            "communicate_info": [],
            "nl_assertions": None,
            "reward_basis": ["DB", "COMMUNICATE"],
        },
        "annotations": None,
    }
    task.update(overrides)
    return task


def _write(tmp_path, content, name="tasks.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_a_public_format_task_file_loads_and_verifies(domains, tmp_path):
    dom = domains["retail"]
    pending = _rows(dom, "SELECT order_id FROM orders WHERE status = 'pending' ORDER BY order_id")
    string_scenario = _public_task(pending[1]["order_id"], id="8",
                                   user_scenario={"instructions": f"Cancel order {pending[1]['order_id']} for me."})
    path = _write(tmp_path, [_public_task(pending[0]["order_id"]), string_scenario])
    first, second = load_tau2_tasks(path, dom)
    assert first.task_id == "7" and first.domain == "retail"
    assert pending[0]["order_id"] in first.instruction and "returning customer" in first.instruction
    assert [a.name for a in first.gold_actions] == ["get_order", "cancel_order"]
    assert first.reward_basis == ["DB", "COMMUNICATE"]
    assert verify(dom, first, first.gold_actions) and not verify(dom, first, [])
    assert gold_hash(dom, first) != dom.initial_hash()
    assert second.instruction == f"Cancel order {pending[1]['order_id']} for me."
    assert not verify(dom, second, first.gold_actions)


def test_a_public_task_without_actions_means_change_nothing(domains, tmp_path):
    dom = domains["retail"]
    raw = _public_task("O1")
    raw["evaluation_criteria"]["actions"] = None
    (task,) = load_tau2_tasks(_write(tmp_path, [raw]), dom)
    assert task.gold_actions == [] and verify(dom, task, [])


def test_initialization_actions_set_up_every_replay(domains, tmp_path):
    dom = domains["retail"]
    first, second = (r["order_id"] for r in _rows(dom, "SELECT order_id FROM orders WHERE status = 'pending' ORDER BY order_id")[:2])
    raw = _public_task(second)
    raw["initial_state"] = {"initialization_data": None, "message_history": None, "initialization_actions": [
        {"env_type": "assistant", "func_name": "cancel_order", "arguments": {"order_id": first}}]}
    (task,) = load_tau2_tasks(_write(tmp_path, [raw]), dom)
    assert task.initial_actions == [Action("cancel_order", {"order_id": first})]
    assert verify(dom, task, task.gold_actions) and not verify(dom, task, [])
    assert '"cancelled"' in dom.new_env(task).call("get_order", {"order_id": first})
    # The task round-trips with its initial state.
    path = str(tmp_path / "again.json")
    write_tau2_tasks(path, [task])
    assert load_tau2_tasks(path, dom) == [task]

    raw["initial_state"]["initialization_actions"][0]["arguments"] = {"order_id": "O0"}
    with pytest.raises(DataError, match="task 0: field 'initial_state.initialization_actions' cannot be applied: order O0 not found"):
        load_tau2_tasks(_write(tmp_path, [raw]), dom)


def _load_error(tmp_path, domain, content):
    with pytest.raises(DataError) as err:
        load_tau2_tasks(_write(tmp_path, content), domain)
    return str(err.value)


def test_bad_task_files_name_file_task_and_field(domains, tmp_path):
    dom = domains["retail"]
    path = str(tmp_path / "tasks.json")
    with pytest.raises(DataError, match="task file not found: .*missing.json"):
        load_tau2_tasks(str(tmp_path / "missing.json"), dom)
    assert _load_error(tmp_path, dom, "[{") .startswith(f"{path}: not valid JSON")
    assert _load_error(tmp_path, dom, {"id": "1"}) == f"{path}: expected a JSON list of tasks, got dict"

    good = _public_task("O1")
    no_criteria = {k: v for k, v in good.items() if k != "evaluation_criteria"}
    assert _load_error(tmp_path, dom, [good, no_criteria]) == f"{path}: task 1: field 'evaluation_criteria' is missing"

    no_reason = copy.deepcopy(good)
    del no_reason["user_scenario"]["instructions"]["reason_for_call"]
    assert "task 0: field 'user_scenario.instructions.reason_for_call' is missing" in _load_error(tmp_path, dom, [no_reason])

    bad_args = copy.deepcopy(good)
    bad_args["evaluation_criteria"]["actions"][1]["arguments"] = {"order_id": 42}
    msg = _load_error(tmp_path, dom, [bad_args])
    assert msg.startswith(f"{path}: task 0: field 'evaluation_criteria.actions[1].arguments'") and "must be string, got int" in msg

    unknown = copy.deepcopy(good)
    unknown["evaluation_criteria"]["actions"] += [{"action_id": "x", "name": "refund_everything", "arguments": {}},
                                                 {"action_id": "y", "name": "exchange_delivered_order_items", "arguments": {}}]
    msg = _load_error(tmp_path, dom, [unknown])
    assert msg.startswith(f"{path}: task 0: field 'evaluation_criteria.actions'")
    assert "'exchange_delivered_order_items'" in msg and "'refund_everything'" in msg and "retail" in msg

    user_action = copy.deepcopy(good)
    user_action["evaluation_criteria"]["actions"][0]["requestor"] = "user"
    assert "field 'evaluation_criteria.actions[0].requestor' is 'user'" in _load_error(tmp_path, dom, [user_action])

    wrong_type = dict(good, ticket=3)
    assert _load_error(tmp_path, dom, [wrong_type]) == f"{path}: task 0: field 'ticket' must be str, got int"

    assert _load_error(tmp_path, dom, [good, good]) == f"{path}: task 1: field 'id' repeats '7' of task 0"
    assert _load_error(tmp_path, dom, [good, "task"]) == f"{path}: task 1: expected a task object, got str"


def _refusal(dom, name, args):
    env = dom.new_env()
    before = env.state_hash()
    with pytest.raises(DomainToolError) as err:
        env.call(name, args)
    assert env.state_hash() == before, "a refused call must change nothing"
    return str(err.value)


def test_bad_arguments_missing_entities_and_broken_rules_are_refused_clearly(domains):
    retail, bank, weather, airline = (domains[n] for n in ("retail", "bank", "weather", "airline"))
    assert _refusal(retail, "refund_order", {}).startswith("unknown function 'refund_order'; retail has: get_customer, ")
    assert _refusal(retail, "cancel_order", {}) == "cancel_order is missing required argument 'order_id'"
    assert _refusal(retail, "cancel_order", {"order_id": "O1", "note": "x"}) == "cancel_order got unexpected argument 'note'"
    assert _refusal(retail, "cancel_order", {"order_id": 1234}) == "argument 'order_id' of cancel_order must be string, got int"
    assert _refusal(retail, "cancel_order", []) == "arguments of cancel_order must be a JSON object, got list"
    assert "must be one of ['damaged', 'wrong item', 'no longer needed']" in _refusal(
        retail, "return_order", {"order_id": "O1", "reason": "bored"})
    assert _refusal(retail, "place_order", {"customer_id": "U1", "product_id": "P1", "quantity": 0}) == \
        "argument 'quantity' of place_order must be between 1 and 20, got 0"
    assert _refusal(retail, "get_order", {"order_id": "O0"}) == "order O0 not found"

    shipped = _rows(retail, "SELECT order_id FROM orders WHERE status = 'shipped' ORDER BY order_id")[0]["order_id"]
    assert _refusal(retail, "cancel_order", {"order_id": shipped}) == f"order {shipped} is shipped; only pending orders can be cancelled"
    empty = _rows(retail, "SELECT product_id FROM products WHERE stock = 0 ORDER BY product_id")[0]["product_id"]
    customer = _rows(retail, "SELECT customer_id FROM customers ORDER BY customer_id")[0]["customer_id"]
    assert _refusal(retail, "place_order", {"customer_id": customer, "product_id": empty, "quantity": 1}) == \
        f"product {empty} has only 0 in stock, 1 requested"

    a, b = _rows(bank, "SELECT account_id, balance FROM accounts WHERE status = 'open' ORDER BY account_id")[:2]
    assert _refusal(bank, "transfer_funds", {"from_account": a["account_id"], "to_account": b["account_id"], "amount": a["balance"] + 1}) == \
        f"insufficient funds: account {a['account_id']} holds {a['balance']}, {a['balance'] + 1} requested"
    assert _refusal(bank, "transfer_funds", {"from_account": a["account_id"], "to_account": a["account_id"], "amount": 1}) == \
        "from_account and to_account must differ"
    frozen = _rows(bank, "SELECT account_id FROM accounts WHERE status = 'frozen' ORDER BY account_id")[0]["account_id"]
    assert _refusal(bank, "pay_bill", {"account_id": frozen, "payee": "City Power", "amount": 1}) == \
        f"account {frozen} is frozen; no money can leave it"

    user = _rows(weather, "SELECT user_id FROM users ORDER BY user_id")[0]["user_id"]
    assert _refusal(weather, "set_alert", {"user_id": user, "city": "Oslo", "metric": "rain", "threshold": 120}) == \
        "a rain threshold must be between 0 and 100, got 120"
    assert _refusal(weather, "set_home_city", {"user_id": user, "city": "Atlantis"}).startswith("unknown city 'Atlantis'; cities: Oslo, ")

    flight = _rows(airline, "SELECT flight_no, date FROM flights WHERE status = 'cancelled' ORDER BY flight_no, date")[0]
    customer = _rows(airline, "SELECT customer_id FROM customers ORDER BY customer_id")[0]["customer_id"]
    assert _refusal(airline, "book_flight", {"customer_id": customer, "flight_no": flight["flight_no"], "date": flight["date"],
                                             "cabin": "economy", "passengers": 1}) == \
        f"flight {flight['flight_no']} on {flight['date']} is cancelled"


def test_a_failed_call_rolls_back_its_partial_writes(domains):
    weather = domains["weather"]
    full = _rows(weather, "SELECT user_id FROM alerts GROUP BY user_id HAVING COUNT(*) = 3 ORDER BY user_id")[0]["user_id"]
    env = weather.new_env()
    before = env.state_hash()
    with pytest.raises(DomainToolError, match=f"user {full} already has 3 alerts; delete one first"):
        env.call("set_alert", {"user_id": full, "city": "Perth", "metric": "wind", "threshold": 60})
    assert env.state_hash() == before


def test_wrong_but_plausible_actions_fail_verification(domains, tasks):
    retail, bank, weather, airline = (domains[n] for n in ("retail", "bank", "weather", "airline"))

    t = _one_task(tasks, "retail", "cancel an order")
    gold_order = t.gold_actions[0].arguments["order_id"]
    other = next(r["order_id"] for r in _rows(retail, "SELECT order_id FROM orders WHERE status = 'pending' ORDER BY order_id")
                 if r["order_id"] != gold_order)
    assert not verify(retail, t, [Action("cancel_order", {"order_id": other})])
    # Any path to the gold state passes: extra reads, a refused call, then the right write.
    assert verify(retail, t, [Action("get_order", {"order_id": other}), Action("cancel_order", {"order_id": "O0"}), t.gold_actions[0]])
    # Doing more than asked does not.
    assert not verify(retail, t, [t.gold_actions[0], Action("cancel_order", {"order_id": other})])

    t = next(t for t in tasks["bank"] if t.gold_actions[0].name == "transfer_funds" and len(t.gold_actions) == 1)
    args = t.gold_actions[0].arguments
    assert not verify(bank, t, [Action("transfer_funds", dict(args, amount=args["amount"] + 5))])
    assert not verify(bank, t, [Action("transfer_funds", dict(args, from_account=args["to_account"], to_account=args["from_account"]))])
    assert not verify(bank, t, [Action("pay_bill", {"account_id": args["from_account"], "payee": "City Power", "amount": args["amount"]})])

    t = _one_task(tasks, "weather", "set an alert")
    args = t.gold_actions[0].arguments
    other_city = next(c for c in ("Oslo", "Lima") if c != args["city"])
    assert not verify(weather, t, [Action("set_alert", dict(args, city=other_city))])

    t = _one_task(tasks, "airline", "book a flight")
    args = t.gold_actions[0].arguments
    assert not verify(airline, t, [Action("book_flight", dict(args, cabin="business" if args["cabin"] == "economy" else "economy"))])

    # Only part of a two-write task is not the task.
    t = _one_task(tasks, "airline", "cancel and rebook")
    assert not verify(airline, t, t.gold_actions[:1])


def test_generate_domains_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tasks_per_domain must be a non-negative integer, got -1"):
        generate_domains(0, -1)
    with pytest.raises(ValueError, match="seed must be an integer, got '0'"):
        generate_domains("0", 5)
    domains, tasks, stats = generate_domains(3, 0)
    assert tuple(domains) == DOMAIN_NAMES and all(t == [] for t in tasks.values()) and all(s["kept"] == 0 for s in stats.values())


def test_cli_writes_tau2_tasks_and_databases(domains, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipelines.domains", "--out", str(out), "--tasks-per-domain", "12"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header == ["domain", "generated", "dropped_failing", "dropped_no_effect", "dropped_duplicate", "kept"]
    table = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:5]}
    assert set(table) == set(DOMAIN_NAMES) and all(row[-1] == "12" for row in table.values())
    _, expected, _ = generate_domains(0, 12)
    for name, dom in domains.items():
        db_bytes = (out / name / "db.sqlite").read_bytes()
        from_disk = Domain(name, dom.description, dom.functions, db_bytes)
        assert from_disk.initial_hash() == dom.initial_hash()
        loaded = load_tau2_tasks(str(out / name / "tasks.json"), from_disk)
        assert loaded == expected[name]
        assert all(verify(from_disk, t, t.gold_actions) for t in loaded)

    bad = subprocess.run([sys.executable, "-m", "pipelines.domains", "--out", str(out), "--tasks-per-domain", "-3"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--tasks-per-domain must be >= 0, got -3" in bad.stderr
