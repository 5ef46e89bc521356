"""Held keys -> ALE full-action-space ids.

The table is derived from ALE's own `Action` enum names (UP, DOWNLEFTFIRE, ...), so it covers all 18 actions and
cannot drift from ALE's numbering.
"""

from collections.abc import Iterable

from ale_py import Action

#: Keys the protocol accepts, in the order they are written in `keys` columns.
KEYS: tuple[str, ...] = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")

_OPPOSITES = (("UP", "DOWN"), ("LEFT", "RIGHT"))


def _parse_action_name(name: str) -> frozenset[str]:
    held = set()
    for key in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE"):
        if key in name:
            held.add(key)
    return frozenset(held)


#: ale_py's Action is a nanobind enum: iterable at run time, though its stubs do not say so.
ALL_ACTIONS: list[Action] = list(Action.__members__.values())

#: frozenset of effective keys -> action id, for all 18 ALE actions (NOOP is the empty set).
KEYS_TO_ACTION: dict[frozenset[str], int] = {_parse_action_name(a.name): a.value for a in ALL_ACTIONS}
ACTION_NAMES: dict[int, str] = {a.value: a.name for a in ALL_ACTIONS}
assert len(KEYS_TO_ACTION) == 18


def effective_keys(held: Iterable[str]) -> frozenset[str]:
    """The held keys with opposite directions cancelled (LEFT+RIGHT is neither)."""
    keys = set(held)
    for a, b in _OPPOSITES:
        if a in keys and b in keys:
            keys.discard(a)
            keys.discard(b)
    return frozenset(keys)


def keys_to_action(held: Iterable[str]) -> int:
    """The ALE action id for a set of held keys; NOOP for none or an impossible combination."""
    return KEYS_TO_ACTION.get(effective_keys(held), 0)


def keys_label(held: Iterable[str]) -> str:
    """Held keys as the `keys` column writes them: in KEYS order, joined by '+', empty for none."""
    keys = set(held)
    return "+".join(k for k in KEYS if k in keys)
