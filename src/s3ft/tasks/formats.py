"""Row formats of the `dataset` task: how one row of a data set becomes a question, its gold answer
and the conversation before it.

- `fields`: a question field and an answer field (names set by `question_field`/`answer_field`).
- `messages`: a list of chat turns `{role, content}` (roles system/user/assistant), as in TRL and
  the hub's chat data sets. The last assistant turn is the gold answer; the user turn before it
  is the question; everything earlier (a system prompt, earlier turns) is kept as context.
- `sharegpt`: `conversations`, a list of `{from, value}` (from: system/human/gpt), and an
  optional `system` field; read like `messages`.
- `alpaca`: `instruction`, optional `input` (appended to the instruction after a blank line),
  `output` (the gold answer), optional `system` and `history` (earlier [question, answer] pairs).

A malformed row is an error saying what it found ("row 17: no assistant turn").
"""

from __future__ import annotations

FORMATS = ("fields", "messages", "sharegpt", "alpaca")

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "chatgpt": "assistant"}


class RowError(ValueError):
    """What is wrong with one row; the caller adds where the row is."""


def detect(row: dict, question_field: str, answer_field: str) -> str | None:
    """The format a row is in, from its keys (None: none fits)."""
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if question_field in row and answer_field in row:
        return "fields"
    return None


def _text(row: dict, key: str, what: str | None = None) -> str:
    if key not in row:
        raise RowError(f"no field '{key}' (fields: {', '.join(map(str, row))})")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(f"{what or 'field ' + repr(key)} must be text, got {type(value).__name__}")
    return str(value)


def from_fields(row: dict, question_field: str, answer_field: str) -> tuple[list[dict], str, str]:
    return [], _text(row, question_field), _text(row, answer_field)


def split_turns(turns) -> tuple[list[dict], str, str]:
    """(context, question, gold) of a conversation: the last assistant turn, the user turn before it,
    and every turn before that."""
    if not isinstance(turns, list) or not turns:
        raise RowError(f"the conversation must be a non-empty list of turns, got {type(turns).__name__}")
    clean = []
    for i, t in enumerate(turns, 1):
        if not isinstance(t, dict) or "role" not in t or "content" not in t:
            raise RowError(f"turn {i} is not a {{role, content}} mapping: {str(t)[:80]!r}")
        if t["role"] not in ("system", "user", "assistant"):
            raise RowError(f"turn {i} has role {t['role']!r} (expected system, user or assistant)")
        if t["role"] == "system" and i > 1:
            raise RowError(f"turn {i} is a system turn; only the first turn may be")
        clean.append({"role": t["role"], "content": _text(t, "content", f"turn {i}'s content")})
    roles = [t["role"] for t in clean]
    if "assistant" not in roles:
        raise RowError(f"no assistant turn (roles: {', '.join(roles)})")
    last = len(roles) - 1 - roles[::-1].index("assistant")
    if last < len(roles) - 1:
        raise RowError(f"{len(roles) - 1 - last} turn(s) after the last assistant turn (roles: {', '.join(roles)})")
    if last == 0 or roles[last - 1] != "user":
        raise RowError(f"the last assistant turn does not follow a user turn (roles: {', '.join(roles)})")
    return clean[:last - 1], clean[last - 1]["content"], clean[last]["content"]


def from_messages(row: dict, field: str) -> tuple[list[dict], str, str]:
    if field not in row:
        raise RowError(f"no field '{field}' (fields: {', '.join(map(str, row))})")
    return split_turns(row[field])


def from_sharegpt(row: dict, field: str) -> tuple[list[dict], str, str]:
    if field not in row or not isinstance(row[field], list):
        raise RowError(f"no list field '{field}' (fields: {', '.join(map(str, row))})")
    turns = [{"role": "system", "content": _text(row, "system")}] if row.get("system") else []
    for i, t in enumerate(row[field], 1):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise RowError(f"turn {i} is not a {{from, value}} mapping: {str(t)[:80]!r}")
        if t["from"] not in SHAREGPT_ROLES:
            raise RowError(f"turn {i} is from {t['from']!r} (expected one of {', '.join(SHAREGPT_ROLES)})")
        turns.append({"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]})
    return split_turns(turns)


def from_alpaca(row: dict) -> tuple[list[dict], str, str]:
    question = _text(row, "instruction")
    if row.get("input"):
        question += "\n\n" + _text(row, "input")
    context = [{"role": "system", "content": _text(row, "system")}] if row.get("system") else []
    for i, pair in enumerate(row.get("history") or [], 1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowError(f"history entry {i} is not a [question, answer] pair")
        context += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
    return context, question, _text(row, "output")
