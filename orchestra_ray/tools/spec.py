"""Tool descriptions in the OpenAI function-calling JSON schema, and argument validation.

The validator covers the subset of JSON Schema that tool parameters use: object with properties,
required, additionalProperties false, scalar types, enums and numeric ranges. It returns a message,
never raises, because bad arguments are the policy's mistake and belong on the trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Dict[str, Any]
    # At most one of these argument groups may be given (e.g. answer: expert or text).
    exclusive: Sequence[str] = field(default_factory=tuple)

    def openai_schema(self) -> Dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def one_line(text: str, limit: int = 0) -> str:
    """`text` as one line of encodable text (it may quote the policy), cut to `limit` characters if set."""
    text = " ".join(text.splitlines()).encode("utf-8", "replace").decode("utf-8")
    return text if not limit or len(text) <= limit else text[: limit - 1] + "…"


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"an integer of {value.bit_length()} bits"
    return text[:64]


def validate_arguments(spec: ToolSpec, args: Any) -> Optional[str]:
    """None when `args` fits the tool's parameters, else a one-line message naming the offending argument."""
    problem = _argument_problem(spec, args)
    return one_line(problem) if problem else None


def _argument_problem(spec: ToolSpec, args: Any) -> Optional[str]:
    if not isinstance(args, dict):
        return f"arguments of {spec.name} must be a JSON object, got {type(args).__name__}"
    props: Dict[str, Any] = spec.parameters.get("properties", {})
    for name in spec.parameters.get("required", []):
        if name not in args:
            return f"{spec.name} is missing required argument '{name}'"
    if spec.parameters.get("additionalProperties") is False:
        extra = sorted((k for k in args if k not in props), key=str)
        if extra:
            return f"{spec.name} got unexpected argument '{str(extra[0])[:64]}'"
    for name, value in args.items():
        schema = props.get(name)
        if schema is None:
            continue
        expected = schema.get("type")
        types = _JSON_TYPES.get(expected, (object,))
        # bool is an int in Python; JSON keeps them apart.
        if not isinstance(value, types) or (expected in ("integer", "number") and isinstance(value, bool)):
            return f"argument '{name}' of {spec.name} must be {expected}, got {type(value).__name__}"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a JSON escape such as "\ud800": no database or file takes it
                return (f"argument '{name}' of {spec.name} must be valid Unicode text, "
                        f"got a lone surrogate at position {exc.start}")
        if "enum" in schema and value not in schema["enum"]:
            return f"argument '{name}' of {spec.name} must be one of {schema['enum']}, got {str(value)[:64]!r}"
        if expected in ("integer", "number"):
            low, high = schema.get("minimum"), schema.get("maximum")
            if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN and Infinity extensions
                return f"argument '{name}' of {spec.name} must be a finite number, got {_show(value)}"
            if low is not None and high is not None and not low <= value <= high:
                return f"argument '{name}' of {spec.name} must be between {low} and {high}, got {_show(value)}"
            if low is not None and not value >= low:
                return f"argument '{name}' of {spec.name} must be >= {low}, got {_show(value)}"
            if high is not None and not value <= high:
                return f"argument '{name}' of {spec.name} must be <= {high}, got {_show(value)}"
    if spec.exclusive:
        given = [k for k in spec.exclusive if k in args]
        if len(given) != 1:
            return f"{spec.name} takes exactly one of {list(spec.exclusive)}, got {given or 'none'}"
    return None


def object_schema(properties: Dict[str, Dict], required: List[str]) -> Dict:
    """A JSON-schema object of exactly these properties."""
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def expert_tools(slots: List[str]) -> List[ToolSpec]:
    """The replay zoo's tools: consult an expert, or end the episode with an answer."""
    call_expert = ToolSpec(
        name="call_expert",
        description="Ask one expert model the current question and read its answer.",
        parameters={
            "type": "object",
            "properties": {"expert": {"type": "string", "enum": list(slots), "description": "expert slot"}},
            "required": ["expert"],
            "additionalProperties": False,
        },
    )
    answer = ToolSpec(
        name="answer",
        description=(
            "Give the final answer and end. Either `expert`: that expert's answer is the final one "
            "(free if you already consulted it, else it is asked now and billed), or `text`: your own answer."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expert": {"type": "string", "enum": list(slots)},
                "text": {"type": "string"},
            },
            "required": [],
            "additionalProperties": False,
        },
        exclusive=("expert", "text"),
    )
    return [call_expert, answer]


def text_answer_tool(description: str) -> ToolSpec:
    """`answer` with free text only, for task families without experts to relay."""
    return ToolSpec(
        name="answer",
        description=description,
        parameters=object_schema({"text": {"type": "string"}}, ["text"]),
    )


def code_tool() -> ToolSpec:
    return ToolSpec(
        name="run_python",
        description="Run a Python program in a sandbox (no network, no files kept) and read what it prints.",
        parameters=object_schema({"code": {"type": "string", "description": "the program; print the result"}}, ["code"]),
    )


def search_tool() -> ToolSpec:
    return ToolSpec(
        name="search",
        description="Search the document collection and read the best matching passages.",
        parameters=object_schema({"query": {"type": "string"},
                                  "k": {"type": "integer", "minimum": 1, "description": "number of passages (optional)"}},
                                 ["query"]),
    )
