"""The tiny policy's vocabulary on the mixed config, without Ray: every entity id of every domain
database is one token (so a held-out request's ids are copied as single tokens), text still round
trips exactly, and the pre-training documents show each database row and a lookup of each id."""

import os
import re

import pytest

from orchestra_ray.config_load import load_config
from orchestra_ray.policy.tiny_model import train_tokenizer
from orchestra_ray.families.task import DOMAIN
from pipelines.families import load_families
from pipelines.zoo import added_tokens, load_zoo, pretraining_documents, tokenizer_corpus

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs")
ID = re.compile(r"\b[A-Z]{1,2}\d{3,}\b")


@pytest.fixture(scope="module")
def mixed(frames_dir):
    cfg = load_config(os.path.join(CONFIGS, "mixed.yaml"), [f"data.path={frames_dir}", "data.max_train_questions=40", "data.max_heldout_questions=10"])
    zoo = load_zoo(cfg)
    families = load_families(cfg, zoo)
    tokens = added_tokens(zoo, families)
    return cfg, zoo, families, tokens, train_tokenizer(tokenizer_corpus(zoo, cfg, families), cfg.policy.tiny.vocab_size, tokens)


def test_slots_come_first_then_every_entity_id_once(mixed):
    _, zoo, families, tokens, _ = mixed
    assert tokens[: len(zoo.slots)] == zoo.slots
    keys = tokens[len(zoo.slots):]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    for dom in families.domains.values():
        assert set(dom.entity_keys()) <= set(keys)
    assert {"airline", "retail", "bank", "weather"} <= set(families.domains)


def test_every_id_of_a_heldout_request_is_one_token_and_text_round_trips(mixed):
    _, _, families, tokens, tok = mixed
    known = set(tokens)
    seen = 0
    for task in families.heldout[DOMAIN]:
        ids = tok.encode(task.problem, add_special_tokens=False)
        assert tok.decode(ids) == task.problem
        pieces = [tok.decode([i]) for i in ids]
        for entity in ID.findall(task.problem):
            if entity in known:
                assert entity in pieces, f"{entity} of {task.question_id} is split: {pieces}"
                seen += 1
    assert seen >= len(families.heldout[DOMAIN])  # every request names at least one entity


def test_pretraining_documents_hold_each_database_row_and_a_lookup_of_each_id(mixed):
    cfg, zoo, families, _, _ = mixed
    docs = pretraining_documents(zoo, cfg, families)
    text = "\n".join(docs)
    lookups = [d for d in docs if d.startswith("<|im_start|>user\nQuestion: ") and "<tool_response>" in d]
    for dom in families.domains.values():
        for key in dom.entity_keys():
            assert key in text
            # Named in a request, asked about in a call, repeated in the result: an id the model
            # learns to copy.
            assert any(key in d.split("<tool_call>")[0] and f'": "{key}"' in d.split("<tool_response>")[0]
                       and f'":"{key}"' in d.split("<tool_response>")[1] for d in lookups), key


def test_frames_only_vocabulary_is_the_slot_names(frames_dir):
    cfg = load_config(os.path.join(CONFIGS, "quickstart.yaml"), [f"data.path={frames_dir}", "data.max_train_questions=10"])
    zoo = load_zoo(cfg)
    assert added_tokens(zoo, load_families(cfg, zoo)) == zoo.slots
