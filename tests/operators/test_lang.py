"""Caption language: py3langid for alphabetic text, the script for CJK (where byte n-grams fail on short text)."""

from __future__ import annotations

import pytest

from quarry.operators.lang import UNDETERMINED, detect_lang


@pytest.mark.parametrize("text, lang", [
    ("a black cat sitting on a red sofa", "en"),
    ("Ein Hund läuft am Strand entlang", "de"),
    ("Le chat noir dort sur le canapé rouge", "fr"),
    ("一只黑猫坐在红色的沙发上", "zh"),
    ("猫", "zh"),  # py3langid alone says 'af' for one Han character
    ("東京タワーの夜景", "ja"),  # Han with kana is Japanese
    ("서울의 밤 풍경", "ko"),
    ("中文标题和说明 with English", "zh"),  # 6 Han words of 8
    ("a photo of the city at night 北京", "en"),  # 7 Latin words of 9
    ("1234 !! ...", UNDETERMINED),
    ("", UNDETERMINED),
])
def test_detect_lang(text, lang):
    assert detect_lang(text) == lang
