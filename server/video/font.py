"""The overlay: frame, score and action in a strip below the game, drawn with a 3x5 bitmap font (no font file, so the
text is the same on every machine)."""

from __future__ import annotations

import numpy as np

from ..core.actions import ACTION_NAMES
from ..core.emulator import SCREEN_WIDTH

OVERLAY_ROWS = 8

_FONT_ROWS = {  # each glyph: 5 rows of 3 bits, most significant bit left
    "0": "111 101 101 101 111",
    "1": "010 110 010 010 111",
    "2": "111 001 111 100 111",
    "3": "111 001 111 001 111",
    "4": "101 101 111 001 001",
    "5": "111 100 111 001 111",
    "6": "111 100 111 101 111",
    "7": "111 001 010 010 010",
    "8": "111 101 111 101 111",
    "9": "111 101 111 001 111",
    "A": "010 101 111 101 101",
    "B": "110 101 110 101 110",
    "C": "011 100 100 100 011",
    "D": "110 101 101 101 110",
    "E": "111 100 110 100 111",
    "F": "111 100 110 100 100",
    "G": "011 100 101 101 011",
    "H": "101 101 111 101 101",
    "I": "111 010 010 010 111",
    "J": "001 001 001 101 010",
    "K": "101 101 110 101 101",
    "L": "100 100 100 100 111",
    "M": "101 111 111 101 101",
    "N": "110 101 101 101 101",
    "O": "010 101 101 101 010",
    "P": "110 101 110 100 100",
    "Q": "010 101 101 110 011",
    "R": "110 101 110 101 101",
    "S": "011 100 010 001 110",
    "T": "111 010 010 010 010",
    "U": "101 101 101 101 111",
    "V": "101 101 101 101 010",
    "W": "101 101 111 111 101",
    "X": "101 101 010 101 101",
    "Y": "101 101 010 010 010",
    "Z": "111 001 010 100 111",
    "-": "000 000 111 000 000",
    "+": "000 010 111 010 000",
    ":": "000 010 000 010 000",
    " ": "000 000 000 000 000",
}
FONT: dict[str, np.ndarray] = {
    ch: np.array([[c == "1" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _FONT_ROWS.items()
}
OVERLAY_TEXT = (255, 255, 255)
OVERLAY_LABEL = (150, 150, 150)
OVERLAY_BG = (24, 24, 24)


def draw_text(img: np.ndarray, x: int, y: int, text: str, colour=OVERLAY_TEXT) -> int:
    """Draw `text` (upper case, digits, `-+:` and space) at (x, y) into an RGB image; returns the x after it."""
    for ch in text.upper():
        glyph = FONT.get(ch, FONT["-"])
        if x + 3 > img.shape[1]:
            break
        img[y : y + 5, x : x + 3][glyph] = colour
        x += 4
    return x


def overlay_strip(frame: int, score: int, action: int) -> np.ndarray:
    """An OVERLAY_ROWS x 160 RGB strip: `F <frame>  S <score>  <action name>`."""
    strip = np.empty((OVERLAY_ROWS, SCREEN_WIDTH, 3), dtype=np.uint8)
    strip[:] = OVERLAY_BG
    x = draw_text(strip, 1, 2, "F", OVERLAY_LABEL)
    x = draw_text(strip, x, 2, f"{frame:<6d}")
    x = draw_text(strip, x + 2, 2, "S", OVERLAY_LABEL)
    x = draw_text(strip, x, 2, f"{score:<6d}")
    draw_text(strip, x + 2, 2, ACTION_NAMES.get(action, str(action)))
    return strip
