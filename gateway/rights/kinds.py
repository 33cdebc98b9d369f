"""Request types, workflow states and the transitions between them. Pure: no I/O."""

from __future__ import annotations

TYPES: tuple[str, ...] = (
    "access",  # a copy of what the gateway holds about the subject
    "portability",  # the same, machine-readable (JSON and CSV)
    "deletion",
    "correction",  # of identity links
    "objection",
    "opt_out_sale",  # opt-out of sale or sharing (US state laws)
    "restriction",
    "withdraw",  # of every consent
)
EXPORT_TYPES = frozenset({"access", "portability"})

RECEIVED = "received"
VERIFYING = "verifying"
IN_PROGRESS = "in_progress"
EXTENDED = "extended"
COMPLETED = "completed"
DENIED = "denied"
STATES: tuple[str, ...] = (RECEIVED, VERIFYING, IN_PROGRESS, EXTENDED, COMPLETED, DENIED)
OPEN_STATES = frozenset({RECEIVED, VERIFYING, IN_PROGRESS, EXTENDED})
FINAL_STATES = frozenset({COMPLETED, DENIED})

# Extending is allowed once (every law in rights.toml allows at most one extension), and only
# once the subject is verified: an unverified request is denied when it expires, not extended.
_NEXT: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({VERIFYING, IN_PROGRESS, DENIED}),
    VERIFYING: frozenset({IN_PROGRESS, DENIED}),
    IN_PROGRESS: frozenset({EXTENDED, COMPLETED, DENIED}),
    EXTENDED: frozenset({COMPLETED, DENIED}),
    COMPLETED: frozenset(),
    DENIED: frozenset(),
}
# Denying and extending must say why (the subject is told; regulators ask).
NEEDS_REASON = frozenset({DENIED, EXTENDED})


class TransitionError(ValueError):
    """A transition the workflow does not allow; ``code`` names it for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_transition(current: str, target: str, reason: str) -> None:
    """Raise ``TransitionError`` unless ``current → target`` is allowed with this reason."""
    if target not in _NEXT.get(current, frozenset()):
        raise TransitionError(
            "invalid_transition", f"a request that is {current} cannot become {target}"
        )
    if target in NEEDS_REASON and not reason.strip():
        raise TransitionError("reason_required", f"say why the request is {target}")


def is_open(state: str) -> bool:
    return state in OPEN_STATES
