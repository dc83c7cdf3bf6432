"""Cortex's AI functions over any model, as the relay answers them row by row: each row's
arguments become one chat request, its answer held to the function's shape by structured
output (a category out of those given, a boolean, the fields asked for), and the answer
becomes the function's value, in Cortex's form. AI_SIMILARITY (embeddings) and AI_AGG
(several requests over a group's rows) are the relay's own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from neve.errors import BadRequest
from neve.protocol.openai import ChatCompletionRequest, ChatMessage

SENTIMENTS = ["positive", "negative", "neutral", "mixed", "unknown"]
MAX_CATEGORIES = 500  # as Cortex's AI_CLASSIFY
FIELD_CHARS = 400  # the longest answer AI_EXTRACT gives a question


class RowError(BadRequest):
    """A row that cannot be answered; it becomes NULL, or fails the batch."""


@dataclass(frozen=True)
class Task:
    """A row's chat request, and how its answer becomes the function's value."""

    request: ChatCompletionRequest
    value: Callable[[str], Any]


def _ask(
    system: str, user: str, max_tokens: int, schema: dict[str, Any] | None = None
) -> ChatCompletionRequest:
    request = ChatCompletionRequest(
        messages=[ChatMessage(role="system", content=system),
                  ChatMessage(role="user", content=user)],
        temperature=0,
        max_tokens=max_tokens,
    )  # fmt: skip
    if schema is not None:
        request.response_format = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "strict": True, "schema": schema},
        }
    return request


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}  # fmt: skip


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise RowError("the model's answer is not the JSON asked for") from None


def as_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} must be text, got {type(value).__name__}")
    return value


def _options(value: Any, known: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    value = parsed(value, "the options")
    if not isinstance(value, dict):
        raise RowError("the options must be an object")
    unknown = sorted(set(value) - known)
    if unknown:
        raise RowError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return value


def parsed(value: Any, what: str) -> Any:
    """An argument that may arrive as JSON text (a VARIANT or a DuckDB JSON value), parsed;
    any other value as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise RowError(f"{what} must be JSON, got {value[:60]!r}") from None


# -- the functions ------------------------------------------------------------------------


def classify(args: list[Any], max_tokens: int) -> Task:
    """AI_CLASSIFY(input, categories [, {task_description, output_mode, examples}]) ->
    {"labels": [...]}: one category, or with output_mode 'multi' any of them."""
    given = as_text(args[0], "the input")
    raw = args[1]
    raw = parsed(raw, "the categories")
    if not isinstance(raw, list) or not raw:
        raise RowError("the categories must be a non-empty array")
    labels: list[str] = []
    described: list[str] = []
    for category in raw:
        if isinstance(category, dict):
            label = as_text(category.get("label"), "a category's label")
            about = category.get("description")
            described.append(f"- {label}" + (f": {about}" if about else ""))
        else:
            label = as_text(category, "a category")
            described.append(f"- {label}")
        labels.append(label)
    if len(set(labels)) != len(labels) or len(labels) > MAX_CATEGORIES:
        raise RowError(f"the categories must be distinct, at most {MAX_CATEGORIES}")
    options = _options(args[2] if len(args) > 2 else None,
                       {"task_description", "output_mode", "examples"})  # fmt: skip
    multi = options.get("output_mode", "single") == "multi"
    if options.get("output_mode", "single") not in ("single", "multi"):
        raise RowError("output_mode must be 'single' or 'multi'")
    shown = options.get("examples") or []
    if not isinstance(shown, list) or not all(isinstance(e, dict) for e in shown):
        raise RowError("examples must be an array of objects {input, labels, explanation}")
    examples = "".join(f"\nExample: {e.get('input')!r} -> {e.get('labels')}" for e in shown)
    task = options.get("task_description") or ""
    system = "You classify text into the given categories. " + as_text(task, "task_description")
    system += examples
    choose = "every category that applies" if multi else "the one category that fits best"
    user = f"Categories:\n{chr(10).join(described)}\n\nText:\n{given}\n\nAnswer with {choose}."
    # The answer is the category itself ("billing"), or the array of them: the fewest
    # tokens a grammar-held answer can take (each costs more than a free one).
    one = {"type": "string", "enum": labels}
    schema = (
        {"type": "array", "items": one, "minItems": 1, "maxItems": len(labels)} if multi else one
    )

    def value(answer: str) -> dict[str, Any]:
        parsed = _json(answer)
        found = parsed if isinstance(parsed, list) else [parsed]
        if not found or not all(isinstance(f, str) for f in found) or not set(found) <= set(labels):
            raise RowError("the model's answer names no given category")
        return {"labels": list(dict.fromkeys(found))}

    return Task(_ask(system, user, max_tokens, schema), value)


def filter_(args: list[Any], max_tokens: int) -> Task:
    """AI_FILTER(input) -> BOOLEAN: whether the statement or question holds."""
    given = as_text(args[0], "the input")
    system = ("You judge whether a statement is true, or answer a yes-or-no question: "
              "answer true or false.")  # fmt: skip
    schema = {"type": "boolean"}

    def value(answer: str) -> bool:
        found = _json(answer)
        if not isinstance(found, bool):
            raise RowError("the model's answer is not true or false")
        return found

    return Task(_ask(system, given, max_tokens, schema), value)


def extract(args: list[Any], max_tokens: int) -> Task:
    """AI_EXTRACT(text, responseFormat) -> {"response": {...}}. The format: an object of
    field: question, an array of questions (or of [field, question] pairs), or
    {"schema": <a JSON schema of an object>}."""
    given = as_text(args[0], "the text")
    form = args[1]
    form = parsed(form, "the response format")
    if isinstance(form, dict) and isinstance(form.get("schema"), dict):
        schema = form["schema"]
        asked = json.dumps(schema.get("properties", {}))
    else:
        if isinstance(form, list):
            pairs = [tuple(q) if isinstance(q, list) and len(q) == 2 else (q, q) for q in form]
        elif isinstance(form, dict):
            pairs = list(form.items())
        else:
            raise RowError("the response format must be an object, an array or a schema")
        if not pairs or not all(isinstance(k, str) and isinstance(q, str) for k, q in pairs):
            raise RowError("the response format must name fields and questions as text")
        # Bounded, so an answer that rambles still closes its JSON within the row's tokens.
        field = {"type": "string", "maxLength": FIELD_CHARS}
        schema = _object({k: field for k, _ in pairs})
        asked = "\n".join(f"- {k}: {q}" for k, q in pairs)
    system = "You extract information from text. Answer each field from the text alone."
    user = f"Fields:\n{asked}\n\nText:\n{given}"

    def value(answer: str) -> dict[str, Any]:
        found = _json(answer)
        if not isinstance(found, dict):
            raise RowError("the model's answer is not an object")
        return {"response": found}

    return Task(_ask(system, user, max_tokens, schema), value)


def sentiment(args: list[Any], max_tokens: int) -> Task:
    """AI_SENTIMENT(text [, categories]) -> {"categories": [{"name": "overall",
    "sentiment": ...}, {"name": <category>, ...}]}, each one of SENTIMENTS."""
    given = as_text(args[0], "the text")
    raw = args[1] if len(args) > 1 else None
    raw = parsed(raw, "the categories")
    if raw is not None and not isinstance(raw, list):
        raise RowError("the categories must be an array")
    aspects = [as_text(c, "a category") for c in raw or []]
    names = ["overall", *aspects]
    system = "You judge the sentiment of text: overall, and towards each aspect named."
    user = f"Aspects: {', '.join(aspects) or 'none'}\n\nText:\n{given}"
    schema = _object({n: {"type": "string", "enum": SENTIMENTS} for n in names})

    def value(answer: str) -> dict[str, Any]:
        found = _json(answer)
        if not isinstance(found, dict) or any(found.get(n) not in SENTIMENTS for n in names):
            raise RowError("the model's answer is not a sentiment")
        return {"categories": [{"name": n, "sentiment": found[n]} for n in names]}

    return Task(_ask(system, user, max_tokens, schema), value)


def summarize(args: list[Any], max_tokens: int) -> Task:
    """SUMMARIZE(text) -> VARCHAR."""
    given = as_text(args[0], "the text")
    system = "You summarize text in a few sentences, keeping what matters most."
    return Task(_ask(system, given, max_tokens), str.strip)


def translate(args: list[Any], max_tokens: int) -> Task:
    """AI_TRANSLATE(text, source_language, target_language) -> VARCHAR; an empty source
    language is detected."""
    given = as_text(args[0], "the text")
    source = as_text(args[1], "the source language") if args[1] is not None else ""
    target = as_text(args[2], "the target language")
    if not target.strip():
        raise RowError("the target language must not be empty")
    origin = f"from {source} " if source.strip() else ""
    system = f"You translate text {origin}into {target}. Answer with the translation alone."
    return Task(_ask(system, given, max_tokens), str.strip)


# name: (build, accepted argument counts, the arguments that may be NULL without making
# the answer NULL)
FUNCTIONS: dict[str, tuple[Callable[[list[Any], int], Task], tuple[int, ...], set[int]]] = {
    "classify": (classify, (2, 3), {2}),
    "filter": (filter_, (1,), set()),
    "extract": (extract, (2,), set()),
    "sentiment": (sentiment, (1, 2), {1}),
    "summarize": (summarize, (1,), set()),
    "translate": (translate, (3,), {1}),
}
# The relay's own: AI_SIMILARITY(a, b) over embeddings, AI_AGG(values, instruction).
ARITY = {**{n: f[1] for n, f in FUNCTIONS.items()}, "similarity": (2,), "agg": (2,)}


CHARS_PER_TOKEN = 3  # what AI_AGG assumes of text it groups: English runs about 4


def count(text: str) -> int:
    """Tokens `text` takes at most, near enough to group rows within a context."""
    return len(text) // CHARS_PER_TOKEN + 1


async def aggregate(
    values: list[str],
    instruction: str,
    *,
    budget: int,
    max_tokens: int,
    run: Callable[[ChatCompletionRequest], Awaitable[str]],
) -> str:
    """AI_AGG: the instruction answered over all `values`, map-reduce: the values go in
    groups that fit `budget` tokens, the groups answered at once (each in at most a third
    of the budget, so at least two answers fit a group of the next round), then the
    answers combined the same way until one is left."""
    max_tokens = max(16, min(max_tokens, budget // 3))
    system = ("You answer an instruction over a set of rows of data. Instruction: "
              + instruction)  # fmt: skip
    level = [f"- {v}" for v in values]
    partial = False
    while True:
        groups: list[list[str]] = [[]]
        used = 0
        for line in level:
            cost = count(line) + 1
            if groups[-1] and used + cost > budget:
                groups.append([])
                used = 0
            groups[-1].append(line[: budget * CHARS_PER_TOKEN] if cost > budget else line)
            used += min(cost, budget)
        what = "answers for parts of the rows, to combine" if partial else "rows"
        asked = [f"The {what}:\n" + "\n".join(group) + "\n\nAnswer the instruction."
                 for group in groups]  # fmt: skip
        answers = [a.strip() for a in await asyncio.gather(
            *(run(_ask(system, user, max_tokens)) for user in asked))]  # fmt: skip
        if len(answers) == 1:
            return answers[0]
        level, partial = [f"- {a}" for a in answers], True
