"""Tool calling and output formats on ``/v1/chat/completions``: tool definitions, ``tool_choice``, the tool calls in the
history and in answers, and ``response_format``.

Every JSON schema a request carries (a tool's parameters, a ``json_schema`` response format) is bounded in size and
nesting and checked against the JSON Schema meta-schema here, so a schema the grammar compiler would choke on is a 400
rather than a failure inside the engine (vLLM had advisories for schemas that crashed it).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TOOLS = 128  # OpenAI's own limit
MAX_TOOL_DESCRIPTION_CHARS = 8192
MAX_TOOL_ARGUMENTS_CHARS = 1 << 20
MAX_SCHEMA_BYTES = 64 * 1024  # one JSON schema (response_format, or one tool's parameters), serialized
MAX_TOOLS_SCHEMA_BYTES = 256 * 1024  # all tools' parameter schemas together
MAX_SCHEMA_DEPTH = 32  # nesting of objects/arrays in one schema


def _depth(value: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max((_depth(v, limit, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, limit, level + 1) for v in value), default=level + 1)
    return level


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Bound a JSON schema's size and nesting, then check it against the JSON Schema meta-schema, so a schema the grammar
    compiler would choke on is a 400 here rather than a failure inside the engine."""
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise ValueError(f"the schema takes {size} bytes; the limit is {MAX_SCHEMA_BYTES}")
    if _depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    import jsonschema  # imported here: only requests with schemas pay for it

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"not a valid JSON schema at {where}: {exc.message[:200]}") from None
    return schema


def tools_schema_bytes(tools: list[Tool]) -> int:
    """What all tools' parameter schemas take together, serialized (bounded by ``MAX_TOOLS_SCHEMA_BYTES``)."""
    return sum(len(json.dumps(tool.function.parameters or {})) for tool in tools)


# --- tools -----------------------------------------------------------------------------------------------------------

FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")]


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: FunctionName
    description: str | None = Field(None, max_length=MAX_TOOL_DESCRIPTION_CHARS)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: FunctionName


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": …}}``: the model must call this function."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolCallFunction(BaseModel):
    name: FunctionName
    arguments: str = Field(max_length=MAX_TOOL_ARGUMENTS_CHARS)


class ToolCall(BaseModel):
    """A tool call, as the assistant made it (in responses) or as the client sends it back in the history."""

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: ToolCallFunction


# --- response_format ---------------------------------------------------------------------------------------------------


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJSONObject(BaseModel):
    type: Literal["json_object"]


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: FunctionName
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_schema(value)


class ResponseFormatJSONSchema(BaseModel):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]
