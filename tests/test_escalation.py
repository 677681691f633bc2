"""The orchestration figures of the report, from plain trajectory rows (no Ray)."""

from orchestra_ray.reports.escalation import escalation


def row(profile, question, *experts):
    return {"preference_profile": profile, "question_id": question,
            "tool_calls": [{"name": "call_expert", "expert": e} for e in experts] + [{"name": "answer", "expert": experts[-1] if experts else ""}]}


def test_second_calls_are_counted_after_abstentions_and_after_answers_apart():
    grades = {"q1": {"cheap": "C", "big": "A"}, "q2": {"cheap": "B", "big": "A"}, "q3": {"cheap": "A", "big": "A"}}
    rows = [row("cost-first", "q1", "cheap", "big"), row("cost-first", "q2", "cheap"), row("cost-first", "q3", "cheap"),
            row("cost-first", "q2", "cheap", "big"), row("balanced", "q1", "big"), row("balanced", "q2")]
    got = escalation(rows, grades)
    c = got["cost-first"]
    assert (c["episodes"], c["multi_call"], c["multi_call_share"]) == (4, 2, 0.5)
    assert (c["after_abstention"], c["second_after_abstention"], c["second_rate_after_abstention"]) == (1, 1, 1.0)
    assert (c["after_answer"], c["second_after_answer"]) == (3, 1)
    assert abs(c["second_rate_after_answer"] - 1 / 3) < 1e-12
    b = got["balanced"]  # one call after an answer; one episode with no call at all
    assert (b["episodes"], b["multi_call"], b["after_answer"], b["after_abstention"]) == (2, 0, 1, 0)
    assert b["second_rate_after_abstention"] is None
