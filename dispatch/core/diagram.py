"""Print the lifecycle's state diagram (Mermaid) from the table: ``python -m
dispatch.core.diagram``. docs/core.md embeds its output, so the picture cannot drift."""

from __future__ import annotations

from dispatch.core.lifecycle import GUARDS, STATUSES, TERMINAL_STATUSES, TRANSITIONS


def mermaid() -> str:
    """The table as a Mermaid ``stateDiagram-v2``."""
    lines = ["stateDiagram-v2", "    [*] --> new: create (no team)",
             "    [*] --> dispatched: create (team found)"]
    for status in STATUSES:
        for (frm, action), to in TRANSITIONS.items():
            if frm == status:
                lines.append(f"    {frm} --> {to}: {action}")
    for status in STATUSES:
        if status in TERMINAL_STATUSES:
            lines.append(f"    {status} --> [*]")
    for action, guard in GUARDS.items():
        lines.append(f"    %% guard {action}: {guard}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
