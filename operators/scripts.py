"""Scripts written without spaces between words (Han and kana): their names and concepts match as plain
substrings, and two characters already make a word."""

from __future__ import annotations

import re

UNSPACED_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
UNSPACED = re.compile(f"[{UNSPACED_CHARS}]")
