"""What the policy is shown of an expert's answer: at most `limit` characters, its beginning and its
end when it is longer.

A reasoning model's answer opens with its approach ("Looking at this question, I need to...") and
closes with what it concluded: the answer, or that it does not know. Cut at `limit` from the start, a
long answer shows the policy only the approach, so it can neither relay nor escalate on what the
expert said (33 of claude-sonnet-4's 823 FRAMES answers end by saying it does not know, after
their first 300 characters). Keeping a quarter of the budget from the start and the rest from the
end shows who answered what, and how it ended.
"""

from __future__ import annotations

ELIDED = " ... "


def expert_view(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head - len(ELIDED)
    if tail <= 0:
        return text[:limit]
    return text[:head] + ELIDED + text[-tail:]
