"""Language of a caption or text: an ISO 639-1 code, from a model that ships inside its package.

py3langid (langid.py's maintained fork; its Naive Bayes model over byte n-grams, 97 languages, is in the
wheel, so nothing is downloaded at run time; ~30 us per caption). Short CJK text is where byte n-grams
fail ("猫" comes back as Afrikaans), while the script alone settles it: text whose letters are mostly Han,
kana or Hangul is `zh`, `ja` (any kana) or `ko` without asking the model. Text with no letters is `und`
(undetermined, as in BCP 47).
"""

from __future__ import annotations

import functools
import unicodedata

UNDETERMINED = "und"
_CJK_SHARE = 0.5  # of a text's words, the share in CJK scripts above which the script decides


def _script(ch: str) -> str:
    o = ord(ch)
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
        return "kana"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "hangul"
    if 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3134F:
        return "han"
    return "other"


@functools.lru_cache(maxsize=1)
def _classify():
    from py3langid import langid  # its model loads once per process, on the first call

    return langid.classify


def detect_lang(text: str) -> str:
    """The language of `text` as an ISO 639-1 code (`zh`, `en`, ...), or `und` when it has no letters.

    The script decides when more than half of the words are CJK, counting each Han or kana character as
    a word (they are written without spaces, as in the caption length rule) and each other run of
    letters as one; otherwise the model does.
    """
    seen: set[str] = set()
    cjk_words = other_words = 0
    run = None  # the script of the run of letters being read (Latin-like and Hangul words are runs)
    for ch in text:
        if not unicodedata.category(ch).startswith("L"):
            run = None
            continue
        script = _script(ch)
        seen.add(script)
        if script in ("han", "kana"):
            cjk_words += 1
            run = None
        elif script != run:
            cjk_words += script == "hangul"
            other_words += script == "other"
            run = script
    if not seen:
        return UNDETERMINED
    if cjk_words > _CJK_SHARE * (cjk_words + other_words):
        if "kana" in seen:
            return "ja"
        return "ko" if "hangul" in seen and "han" not in seen else "zh"
    return _classify()(text)[0]


__all__ = ["UNDETERMINED", "detect_lang"]
