"""Tool descriptions in the OpenAI function-calling JSON schema, and argument validation.

The validator covers the subset of JSON Schema that tool parameters use: object with properties,
required, additionalProperties false, scalar types and enums. It returns a message, never raises,
because bad arguments are the policy's mistake and belong on the trajectory.
"""

from __future__ import annotations

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


def validate_arguments(spec: ToolSpec, args: Any) -> Optional[str]:
    """None when `args` fits the tool's parameters, else a message naming the offending argument."""
    if not isinstance(args, dict):
        return f"arguments of {spec.name} must be a JSON object, got {type(args).__name__}"
    props: Dict[str, Any] = spec.parameters.get("properties", {})
    for name in spec.parameters.get("required", []):
        if name not in args:
            return f"{spec.name} is missing required argument '{name}'"
    if spec.parameters.get("additionalProperties") is False:
        extra = sorted(set(args) - set(props))
        if extra:
            return f"{spec.name} got unexpected argument '{extra[0][:64]}'"
    for name, value in args.items():
        schema = props.get(name)
        if schema is None:
            continue
        expected = schema.get("type")
        types = _JSON_TYPES.get(expected, (object,))
        # bool is an int in Python; JSON keeps them apart.
        if not isinstance(value, types) or (expected in ("integer", "number") and isinstance(value, bool)):
            return f"argument '{name}' of {spec.name} must be {expected}, got {type(value).__name__}"
        if "enum" in schema and value not in schema["enum"]:
            return f"argument '{name}' of {spec.name} must be one of {schema['enum']}, got {str(value)[:64]!r}"
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
