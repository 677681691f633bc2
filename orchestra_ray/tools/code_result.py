"""What one call of the code interpreter returns, and the observation the policy reads of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class CodeResult:
    ok: bool
    stdout: str
    stderr: str
    exit_code: Optional[int]  # None when the program was stopped (timeout, output) or never ran
    error: str  # "" when ok, else a short reason
    wall_s: float
    truncated: bool  # stdout or stderr is not the program's whole output

    def failure_kind(self) -> str:
        """A coarse reason for metrics: timeout, output, signal, exit, or unavailable ("" when ok)."""
        if self.ok:
            return ""
        if self.error.startswith("timed out"):
            return "timeout"
        if self.exit_code is None:
            return "output" if "output" in self.error else "unavailable"
        return "signal" if self.exit_code < 0 else "exit"

    def observation(self, max_chars: int) -> str:
        """What the policy reads: stdout, the tail of stderr, then `error: ...` when the call failed,
        within max_chars. The start of stdout and the end of stderr (where a traceback ends) are
        kept when both do not fit; the error line is kept whole as far as it fits."""
        max_chars = max(1, int(max_chars))
        error = "" if self.ok else f"error: {self.error}"
        out, err = self.stdout.rstrip("\n"), self.stderr.rstrip("\n")
        if self.truncated:
            out = f"{out}\n{CUT_MARK}" if out else CUT_MARK
        budget = max_chars - (len(error) + 1 if error else 0)
        if budget <= 0:
            return error[:max_chars]
        if len(out) + len(err) + (1 if out and err else 0) > budget:
            err_room = min(len(err), budget // 2 if out else budget)
            out_room = max(0, budget - err_room - (1 if err_room else 0))
            err = _keep_tail(err, err_room)
            out = _keep_head(out, out_room)
        text = "\n".join(p for p in (out, err, error) if p)
        return text or "(no output)"


CUT_MARK = "[output cut]"


def _keep_head(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    mark = "\n" + CUT_MARK
    return text[: room - len(mark)] + mark if room > len(mark) else text[:room]


def _keep_tail(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    mark = CUT_MARK + "\n"
    if room <= len(mark):
        return text[len(text) - room:] if room else ""
    return mark + text[len(text) - (room - len(mark)):]


def failed(error: str, wall_s: float = 0.0) -> CodeResult:
    """A result for a call that did not run the program."""
    return CodeResult(False, "", "", None, error, wall_s, False)
