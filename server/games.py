"""The game catalogue: the old system's names, every ALE ROM id, and the instructions in roms/games.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ale_py import roms

from .errors import UnknownGame

CATALOGUE = Path(__file__).resolve().parent.parent / "roms" / "games.json"


@dataclass(frozen=True)
class Game:
    """A playable game: `name` goes into trajectory IDs, `rom` is the ALE ROM id."""

    name: str
    rom: str
    title: str
    goal: str = ""
    keys: str = "Arrow keys (or WASD) to move, SPACE to fire."


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Game]:
    """Every known game by name: the catalogue's entries first, then all other ALE ROMs."""
    games: dict[str, Game] = {}
    entries = json.loads(CATALOGUE.read_text())["games"]
    for e in entries:
        games[e["name"]] = Game(
            e["name"], e["rom"], e.get("title", e["name"]), e.get("goal", ""), e.get("keys", Game.keys)
        )
    covered = {g.rom for g in games.values()}
    for rom_id in roms.get_all_rom_ids():
        if rom_id not in covered:
            name = rom_id.replace("_", "")
            games[name] = Game(name, rom_id, rom_id.replace("_", " ").title())
    return games


def resolve_game(raw: str) -> Game:
    """A catalogue name (`spaceinvaders`) or an ALE ROM id (`space_invaders`) -> Game; UnknownGame otherwise."""
    key = raw.strip().lower() if isinstance(raw, str) else ""
    games = catalogue()
    if key in games:
        return games[key]
    for game in games.values():
        if game.rom == key:
            return game
    raise UnknownGame(
        f"unknown game {raw!r}; valid names: {', '.join(sorted(games))} (ALE ROM ids such as space_invaders work too)"
    )
