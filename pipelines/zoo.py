"""The replay zoo as the driver sees it: questions and their split, local replay experts (for the
warm-start demonstrations and the evaluation anchors), the system prompt, the tokenizer corpus."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from orchestra_ray.rollout.chat import IM_END, IM_START, SlotCard, system_prompt, tool_call_text, tool_exchange, user_message
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError, DataError
from orchestra_ray.families.domains.database import Database
from orchestra_ray.families.domains.environment import compact_json
from orchestra_ray.families.domains.lookups import lookup_calls
from orchestra_ray.experts.base import ExpertRequest, ReplayExpert
from orchestra_ray.families.frames import Question, load_questions, load_responses, split_questions
from orchestra_ray.grpo.preferences import profile_names, profile_vector
from orchestra_ray.experts.pricing import PriceTable
from orchestra_ray.policy import pretrained
from orchestra_ray.policy.tiny_model import tiny_policy_path
from orchestra_ray.reports.baselines import Answer
from orchestra_ray.rollout.expert_view import expert_view
from orchestra_ray.tools.spec import expert_tools


@dataclass
class Zoo:
    slots: List[str]
    train: List[Question]
    heldout: List[Question]
    experts: Dict[str, ReplayExpert]
    system_prompt: str
    cards: List[SlotCard]  # what the system prompt lists of each slot

    def recorded_answers(self, questions: Sequence[Question]) -> Dict[str, Dict[str, Answer]]:
        """Every slot's recorded answer to each question: question id -> slot -> `Answer`."""
        out: Dict[str, Dict[str, Answer]] = {}
        for q in questions:
            request = ExpertRequest(q.question_id, [{"role": "user", "content": q.problem}])
            out[q.question_id] = {s: _answer(self.experts[s].respond(request)) for s in self.slots}
        return out


def _answer(r) -> Answer:
    return Answer(r.text, r.grade or "", r.input_tokens, r.output_tokens, r.cost, r.latency)


def load_zoo(cfg: OrchestraConfig) -> Zoo:
    # The warm-start demonstrations, the evaluation anchors and the tokenizer corpus are built from
    # recorded answers, so a live slot ("openai", "serve") also names the arm that stands in for it.
    for i, e in enumerate(cfg.zoo.experts):
        if not e.arm:
            raise ConfigError(
                f"invalid value for config key 'zoo.experts.{i}.arm': the pipeline replays recorded answers for "
                f"warm-start demonstrations and evaluation anchors; the '{e.backend}' slot '{e.name}' needs the arm "
                "that stands in for it there"
            )
    questions = load_questions(cfg.data.path)
    slots = [e.name for e in cfg.zoo.experts]
    responses = load_responses(cfg.data.path, [e.arm for e in cfg.zoo.experts])
    prices = PriceTable.from_slots(cfg.zoo.experts)
    experts = {e.name: ReplayExpert(e.name, responses[e.arm], prices, cfg.zoo.input_tokens_overhead) for e in cfg.zoo.experts}
    # Keep only questions every slot can answer, so no policy is judged on a missing record.
    questions = [q for q in questions if all(q.question_id in responses[e.arm] for e in cfg.zoo.experts)]
    train, heldout = split_questions(questions, cfg.data.heldout_fraction)
    if cfg.data.max_train_questions:
        train = train[: cfg.data.max_train_questions]
    if cfg.data.max_heldout_questions:
        heldout = heldout[: cfg.data.max_heldout_questions]
    cards = []
    for e in cfg.zoo.experts:
        typical = statistics.median(prices.latency(e.name, r.output_tokens) for r in responses[e.arm].values())
        price = prices.prices[e.name]
        cards.append(SlotCard(e.name, e.description, price.input_per_million, price.output_per_million, typical))
    return Zoo(slots, train, heldout, experts, system_prompt(cards, expert_tools(slots)), cards)


def load_test_zoo(cfg: OrchestraConfig, zoo: Zoo, test_dir: str) -> Tuple[Zoo, str]:
    """`zoo` with every question of another data set in the replay schema (`test_dir`) that every
    arm answered held out in place of its own held-out split, and a line saying how many; the
    training split (what baselines are fitted on) and its recorded answers are kept. A question id
    the two data sets share with different text is an error."""
    questions = load_questions(test_dir)
    responses = load_responses(test_dir, [e.arm for e in cfg.zoo.experts])
    heldout = [q for q in questions if all(q.question_id in responses[e.arm] for e in cfg.zoo.experts)]
    if not heldout:
        raise DataError(f"{test_dir}: no question has a recorded response of every arm of the zoo "
                        f"({', '.join(e.arm for e in cfg.zoo.experts)})")
    known = {q.question_id: q.problem for q in zoo.train + zoo.heldout}
    clash = sorted(q.question_id for q in heldout if q.question_id in known and known[q.question_id] != q.problem)
    if clash:
        raise DataError(f"{test_dir}: question ids {', '.join(clash[:3])} also name other questions of {cfg.data.path}; "
                        "give the test data ids of its own")
    note = f"test data {test_dir}: {len(heldout)} of its {len(questions)} questions have an answer of every arm"
    if cfg.data.max_heldout_questions and len(heldout) > cfg.data.max_heldout_questions:
        heldout = heldout[: cfg.data.max_heldout_questions]
        note += f"; the first {len(heldout)} are held out (data.max_heldout_questions)"
    ids = {q.question_id for q in heldout}
    experts = {}
    for e in cfg.zoo.experts:  # the test questions' answers join the run's own, none replaced
        own = zoo.experts[e.name]
        added = {q: r for q, r in responses[e.arm].items() if q in ids}
        experts[e.name] = ReplayExpert(e.name, {**added, **own.records}, own.prices, own.input_overhead)
    return Zoo(zoo.slots, zoo.train, heldout, experts, zoo.system_prompt, zoo.cards), note


def tokenizer_corpus(zoo: Zoo, cfg: OrchestraConfig, families=None) -> List[str]:
    """Text the tiny model's tokenizer is trained on: prompts, train questions, tool calls and the
    zoo's answers on the train split (never the held-out questions). Template text is repeated as
    often as episodes repeat it, so BPE merges compress it as they would in real use. Other task
    families add their prompts, train problems and reference tool calls."""
    n = len(zoo.train)
    corpus = [zoo.system_prompt] * n
    for fam, pool in (families.train.items() if families else []):
        if fam == "frames":
            continue
        for q in pool:
            corpus.append(families.toolsets[q.toolset][0])
            corpus.append(q.problem)
            corpus.extend(tool_call_text(name, args) for name, args in families.reference[q.question_id])
    own = cfg.preferences.weights
    for p in profile_names(zoo.slots, own):
        corpus.extend([user_message("", profile_vector(p, zoo.slots, own))] * n)
    for s in zoo.slots:
        corpus.extend([tool_call_text("call_expert", {"expert": s})] * n)
        corpus.extend([tool_call_text("answer", {"expert": s})] * n)
        for q in zoo.train:
            rec = zoo.experts[s].records.get(q.question_id)
            if rec is not None:
                corpus.append(expert_view(rec.text, cfg.zoo.max_response_chars))
    corpus.extend(q.problem for q in zoo.train)
    return corpus


def added_tokens(zoo: Zoo, families=None) -> List[str]:
    """Whole tokens of the tiny policy's tokenizer: the expert slot names, and the entity ids of
    every domain database. A byte-level BPE splits an unseen id such as R4491 into pieces a tiny
    model cannot reliably copy from a request into a function argument; as one token, the id is
    copied as an expert name is chosen."""
    keys = sorted({k for dom in (families.domains.values() if families else []) for k in dom.entity_keys()})
    return list(zoo.slots) + [k for k in keys if k not in zoo.slots]


def pretraining_documents(zoo: Zoo, cfg: OrchestraConfig, families=None) -> List[str]:
    """The tiny base model's pre-training text: train questions, the zoo's answers to them, the
    preference texts and the tool-call syntax with every expert equally often (no routing in it).
    Other task families add their problems and their tools' descriptions, not their solutions;
    domains add their databases' rows (what their functions read), so every entity id is seen."""
    docs: List[str] = []
    for fam, pool in (families.train.items() if families else []):
        if fam != "frames":
            docs.extend(q.problem for q in pool)
            docs.extend({q.toolset: families.toolsets[q.toolset][0] for q in pool}.values())
    for name, dom in (families.domains.items() if families else []):
        for table, rows in Database.from_bytes(dom.db_bytes).dump().items():
            docs.extend(f"{name} {table}: {compact_json(row)}" for row in rows)
        # Each entity id in a request, its read call and the result: copying ids, for every id.
        lookups = [f"{IM_START}user\nQuestion: {c.request}{IM_END}\n{IM_START}assistant\n"
                   + tool_call_text(c.name, c.arguments) + tool_exchange(c.result) for c in lookup_calls(dom)]
        docs.extend(lookups * cfg.families.domain.lookup_repeats)
    for q in zoo.train:
        docs.append(q.problem)
        for s in zoo.slots:
            rec = zoo.experts[s].records.get(q.question_id)
            if rec is not None:
                docs.append(f"{s}: {expert_view(rec.text, cfg.zoo.max_response_chars)}")
    for p in profile_names(zoo.slots, cfg.preferences.weights):
        docs.append(user_message("", profile_vector(p, zoo.slots, cfg.preferences.weights)))
    # Consult-then-relay exchanges, every expert equally often: the syntax, and that one relays the
    # expert one consulted. Which expert to pick is left to the warm start and RL.
    rng = random.Random(cfg.policy.tiny.seed)
    for q in zoo.train:
        s = rng.choice(zoo.slots)
        rec = zoo.experts[s].records.get(q.question_id)
        text = expert_view(rec.text, cfg.zoo.max_response_chars) if rec is not None else ""
        docs.append(
            tool_call_text("call_expert", {"expert": s}) + tool_exchange(f"{s}: {text}") + tool_call_text("answer", {"expert": s})
        )
    random.Random(cfg.policy.tiny.seed).shuffle(docs)
    return docs


def initial_policy_path(zoo: Zoo, cfg: OrchestraConfig, families=None, on_step=None) -> str:
    """The policy a run starts from: `policy.model` when it names one, else the tiny base model of
    this zoo and these families (built on first use, then read from `policy.cache_dir`);
    `on_step(done, total)`: its pre-training's progress, when it is built."""
    p = cfg.policy
    if p.model != "tiny":
        try:  # a known name or a GGUF file: its HF folder, built on first use
            return pretrained.resolve(p.model, p.cache_dir)
        except pretrained.PretrainedUnavailable as exc:
            raise ConfigError(str(exc)) from None
    return tiny_policy_path(p.tiny, tokenizer_corpus(zoo, cfg, families), p.cache_dir,
                            pretraining_documents(zoo, cfg, families), added_tokens(zoo, families), on_step)
