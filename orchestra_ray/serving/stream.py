"""A served request's episode as a stream of plain items, handed to `push` as they happen:

    {"call": <the call as the trace has it>}   when the episode makes a call
    {"content": <text>}                        the next piece of the answer
    {"end": {"trace": ..., "answer": ...}}     the trace when the episode is over (`end`)

The answer streams as the policy writes the text of its `answer` call (`partial_answer`); an
answer relayed from an expert, or a limit's fallback, is known only at the end and comes whole.
No Ray here: the deployment's `push` carries the items from the loop's thread to the response.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

from orchestra_ray.rollout.calls import CallRecord
from orchestra_ray.rollout.chat import ChatFormat
from orchestra_ray.rollout.episode import Episode
from orchestra_ray.rollout.parsing import partial_answer
from orchestra_ray.serving.api import call_trace

Item = Dict[str, Any]


class EpisodeStream:
    """The `EpisodeEvents` of one served episode."""

    def __init__(self, chat: ChatFormat, push: Callable[[Item], None]):
        self.chat, self.push = chat, push
        self.sent = ""  # the answer's text streamed so far
        self.following = True  # the text the policy writes still extends what was sent

    def on_tokens(self, ep: Episode, turn: int, token_ids: Sequence[int]) -> None:
        if not self.following:
            return
        text = partial_answer(self.chat.decode(token_ids))
        if text is None or len(text) <= len(self.sent):
            return
        if not text.startswith(self.sent):  # a later turn writes another answer: it comes whole at the end
            self.following = False
            return
        self.push({"content": text[len(self.sent):]})
        self.sent = text

    def on_call(self, ep: Episode, record: CallRecord) -> None:
        self.push({"call": call_trace(record)})

    def end(self, trace: Dict[str, Any], answer: str) -> List[Item]:
        """The answer's rest and the end, once the loop is done with the episode. An answer call the
        policy began but did not give (cut off, malformed) had streamed pieces that are not the
        answer: the end then carries the answer whole."""
        if not answer.startswith(self.sent):
            return [{"end": {"trace": trace, "answer": answer}}]
        rest = answer[len(self.sent):]
        return ([{"content": rest}] if rest else []) + [{"end": {"trace": trace, "answer": None}}]
