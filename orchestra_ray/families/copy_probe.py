"""Copy probes: does a policy copy a value from its context where a domain episode needs it?

Domain tasks are won or lost on copying: an id or an amount written in the user's request has to
reappear in a call's arguments, and an id in a call has to be recognised in the call's result. A
probe cuts a scripted episode (the gold calls with their real observations) just before such a
value and asks whether the policy's greedy continuation writes it. The figures separate "the
policy picks the wrong function" from "the policy cannot copy", which success rates cannot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from orchestra_ray.rollout.chat import ChatFormat, tool_call_text, tool_exchange

REQUEST_TO_CALL = "request->call"  # a value of the user's request, into a call's arguments
CALL_TO_RESULT = "call->result"  # a value of a call's arguments, where the result repeats it
KINDS = (REQUEST_TO_CALL, CALL_TO_RESULT)


@dataclass(frozen=True)
class CopyProbe:
    kind: str
    function: str
    prompt_ids: List[int]
    target: str  # the text the continuation has to start with (a number with its leading space)


def _value_text(value) -> str:
    """How an argument value is written inside a call's JSON (strings without their quotes)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _copyable(value) -> bool:
    # Booleans and containers are not copied from prose; empty strings carry nothing to copy.
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and _value_text(value) != ""


def copy_probes(chat: ChatFormat, system: str, user: str, calls: Sequence[Tuple[str, Dict]],
                observe: Callable[[str, Dict], str]) -> List[CopyProbe]:
    """The probes of one scripted episode, laid out token for token as the warm start's
    demonstration of it: each call but the last is followed by its observation."""
    probes: List[CopyProbe] = []
    ids = chat.prompt_ids(system, user)
    for k, (name, args) in enumerate(calls):
        text = tool_call_text(name, args)
        cursor = text.index('"arguments"')
        for value in args.values():
            if not _copyable(value):
                continue
            written = ": " + json.dumps(value, ensure_ascii=False)  # anchored on a key's colon
            at = text.find(written, cursor)
            if at < 0:
                continue
            cursor = at + len(written)
            # After a string's opening quote; before a number's space, which a byte-level BPE
            # writes as one token with the digits.
            quoted = isinstance(value, str)
            start = at + 1 + 2 * quoted
            if _value_text(value) in user:
                probes.append(CopyProbe(REQUEST_TO_CALL, name, ids + chat.encode(text[:start]), text[start:cursor - quoted]))
        ids = ids + chat.encode(text)
        if k == len(calls) - 1:
            break
        observation = observe(name, args)
        exchange = tool_exchange(observation)
        offset = exchange.index(observation) if observation else 0
        for value in args.values():
            if _copyable(value) and _value_text(value) in observation:
                at = offset + observation.index(_value_text(value))
                end = at + len(_value_text(value))
                at -= exchange[at - 1] == " "  # the space goes with the value, as above
                # the template's head, then the observation as plain text, as observation_ids encodes it
                prefix = chat.encode(exchange[:offset]) + chat.encode_untrusted(exchange[offset:at])
                probes.append(CopyProbe(CALL_TO_RESULT, name, ids + prefix, exchange[at:end]))
        ids = ids + chat.observation_ids(observation)
    return probes


def copied(target: str, continuation: str) -> bool:
    """The continuation writes the whole value and no more of it: `K31` is not `K3177`."""
    if not continuation.startswith(target):
        return False
    rest = continuation[len(target):]
    return not rest or not (rest[0].isalnum() or rest[0] in "_.")


def copy_rates(probes: Sequence[CopyProbe], hits: Sequence[bool]) -> Dict[str, Dict[str, float]]:
    """Hits, probes and their share per kind (kinds with no probe are left out)."""
    if len(probes) != len(hits):
        raise ValueError(f"{len(hits)} results for {len(probes)} probes")
    out: Dict[str, Dict[str, float]] = {}
    for kind in KINDS:
        got = [h for p, h in zip(probes, hits) if p.kind == kind]
        if got:
            out[kind] = {"hits": sum(got), "probes": len(got), "rate": sum(got) / len(got)}
    return out
