"""The ocr_search questions per language (`tasks.language`): the transcription prompt, the zoom-and-read
questions, the region names and the search question's subject. The search question's relation wording
comes from imagemining's templates of the same language."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    ocr_question: str  # the `ocr` task: the whole transcription
    regions: dict[str, str]  # region key ("top-left", ...) -> how the question names it
    zoom: dict[str, tuple[str, ...]]  # entity kind -> question variants with {region}
    text_nouns: dict[str, str]  # entity kind -> what carries the name ("label", "block of text")
    search_subject: str  # {type_noun} named on the small {text_noun} near the {region}
    search_hint: str  # what the search question says the tools are
    joiner: str  # between the question and the hint


WORDINGS: dict[str, Wording] = {
    "en": Wording(
        ocr_question="Read all the text in this image in reading order, one line of text per line.",
        regions={k: k for k in ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom",
                                "bottom-right")},
        zoom={
            "number": ("What is the small number near the {region} of the image? Zoom in on it to read it.",
                       "Read the small figure printed near the {region} of the image: what is it?"),
            "field": ("What does the small field near the {region} of the image say? Crop it to read it.",
                      "Zoom in on the small key-value text near the {region} of the image: what does it read?"),
            "paragraph": ("What does the small block of text near the {region} of the image say? Crop it to read it.",
                          "Zoom in on the fine print near the {region} of the image: what is written there?"),
            "label": ("What does the small label near the {region} of the image say? Crop it to read it.",
                      "Zoom in on the small text near the {region} of the image: what does it read?"),
        },
        text_nouns={"paragraph": "block of text", "field": "field", "label": "label"},
        search_subject="the {type_noun} named on the small {text_noun} near the {region} of the image",
        search_hint="Crop it to read the name, then search for it.",
        joiner=" ",
    ),
    "zh": Wording(
        ocr_question="按阅读顺序读出图中的所有文字，每行文字占一行。",
        regions={"top-left": "左上方", "top": "上方", "top-right": "右上方", "left": "左侧", "centre": "中央",
                 "right": "右侧", "bottom-left": "左下方", "bottom": "下方", "bottom-right": "右下方"},
        zoom={
            "number": ("图片{region}附近的小数字是多少？请放大查看。", "请读出印在图片{region}附近的小数字：是多少？"),
            "field": ("图片{region}附近的小字段写着什么？请裁剪后阅读。", "请放大图片{region}附近的键值小字：写的是什么？"),
            "paragraph": ("图片{region}附近的小段文字写着什么？请裁剪后阅读。", "请放大图片{region}附近的细小文字：上面写了什么？"),
            "label": ("图片{region}附近的小标签写着什么？请裁剪后阅读。", "请放大图片{region}附近的小字：写的是什么？"),
        },
        text_nouns={"paragraph": "文字块", "field": "字段", "label": "标签"},
        search_subject="图片{region}附近小{text_noun}上写着名字的{type_noun}",
        search_hint="请先裁剪读出名字，再搜索它。",
        joiner="",
    ),
}
LANGUAGES: tuple[str, ...] = tuple(WORDINGS)
