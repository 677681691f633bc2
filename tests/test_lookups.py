"""Read-only lookups over a domain's whole database (no Ray), the tiny base model's copy-rich
pre-training text: every entity id is asked about, every result is the domain's own answer, no
write function is called and the database is left as it was."""

import json

import pytest

from orchestra_ray.families.domains import generate_domains
from orchestra_ray.families.domains.lookups import lookup_calls


@pytest.fixture(scope="module")
def domains():
    return generate_domains(0, 20)[0]


def test_every_entity_id_is_an_argument_of_some_lookup(domains):
    for dom in domains.values():
        asked = {v for c in lookup_calls(dom) for v in c.arguments.values()}
        missing = set(dom.entity_keys()) - asked
        assert not missing, f"{dom.name}: no lookup names {sorted(missing)[:5]}"


def test_lookups_only_read_and_answer_as_the_domain_does(domains):
    for dom in domains.values():
        calls = lookup_calls(dom)
        assert len({(c.name, json.dumps(c.arguments, sort_keys=True)) for c in calls}) == len(calls)
        env = dom.new_env()
        for c in calls:
            assert not dom.function(c.name).writes
            assert env.call(c.name, c.arguments) == c.result
            # The copies the pre-training text shows: each value asked about is in the request, and
            # an id is repeated in the answer.
            assert all(str(v) in c.request for v in c.arguments.values()), c
            assert any(str(v) in c.result for v in c.arguments.values()), c
        assert env.state_hash() == dom.initial_hash()


def test_every_read_function_is_asked(domains):
    for dom in domains.values():
        assert {c.name for c in lookup_calls(dom)} == {f.name for f in dom.functions if not f.writes}
