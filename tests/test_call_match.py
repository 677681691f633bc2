"""Domain call match without Ray: each gold action against the call made at its position."""

import json

from orchestra_ray.families.domains.call_match import call_match, summarise_call_match
from orchestra_ray.rollout.sample import Sample

GOLD = [("cancel_reservation", {"reservation_id": "R6991"}),
        ("book_flight", {"customer_id": "C9711", "flight_no": "OR590", "passengers": 2}),
        ("answer", {"text": "Done."})]


def call(name, **args):
    return {"name": name, "arguments": json.dumps(args)}


def test_exact_calls_match_everything_and_answers_are_not_actions():
    calls = [call("cancel_reservation", reservation_id="R6991"),
             call("book_flight", customer_id="C9711", flight_no="OR590", passengers=2), call("answer", text="ok")]
    assert call_match(calls, GOLD) == (2, 2, 4, 4)


def test_right_function_with_an_id_not_copied():
    calls = [call("cancel_reservation", reservation_id="R4219"), call("book_flight", customer_id="C9711", flight_no="OR590", passengers="2")]
    assert call_match(calls, GOLD) == (2, 2, 4, 2)  # R4219 is not R6991, "2" is not 2


def test_wrong_or_missing_function_scores_nothing_at_that_position():
    assert call_match([call("get_reservation", reservation_id="R6991")], GOLD) == (2, 0, 4, 0)
    assert call_match([], GOLD) == (2, 0, 4, 0)


def test_unparseable_arguments_match_no_value():
    calls = [{"name": "cancel_reservation", "arguments": "{not json"}]
    assert call_match(calls, GOLD) == (2, 1, 4, 0)


def test_summary_pools_over_episodes_with_gold_only():
    rows = [Sample(question_id="t1", tool_calls=[call("cancel_reservation", reservation_id="R6991")]),
            Sample(question_id="t2", tool_calls=[call("cancel_reservation", reservation_id="R1")]),
            Sample(question_id="frames-7", tool_calls=[call("call_expert", expert="gpt-5-mini")])]
    gold = {"t1": GOLD[:1], "t2": GOLD[:1]}
    assert summarise_call_match(rows, gold) == {"function_match": 1.0, "argument_match": 0.5}
    assert summarise_call_match([], gold) == {"function_match": 0.0, "argument_match": 0.0}
