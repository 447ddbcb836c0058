"""The answers of the workers as a readable table, one worker after the other."""

from __future__ import annotations


def render(answers: dict) -> str:
    """``{worker name: reply}`` as text: a line per worker, its reply under it."""
    lines = []
    for hostname in sorted(answers):
        reply = answers[hostname]
        if isinstance(reply, dict) and set(reply) <= {"ok", "error"} and reply:
            kind, text = next(iter(reply.items()))
            lines.append(f"{hostname}: {'OK' if kind == 'ok' else 'ERROR'} {text}")
        elif isinstance(reply, list):
            lines.append(f"{hostname}: {len(reply)}")
            lines.extend(_list(reply))
        elif isinstance(reply, dict):
            lines.append(f"{hostname}:")
            lines.extend(f"  {key}: {value}" for key, value in _flat(reply))
        else:
            lines.append(f"{hostname}: {reply}")
    return "\n".join(lines)


def _list(items: list) -> list[str]:
    if not items or not all(isinstance(item, dict) for item in items):
        return [f"  {item}" for item in items]
    columns = list(items[0])
    rows = [columns] + [["" if item.get(c) is None else str(item.get(c)) for c in columns]
                        for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _flat(mapping: dict, prefix: str = ""):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
