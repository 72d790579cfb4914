"""Chinese wording of the gui tasks (`tasks.language=zh`, operators/gui/wording.py): the same tasks as English
(targets, boxes, actions, typed text, tiers), Han characters in every instruction and prose answer, page text
quoted as the page has it, English ids unchanged and Chinese ids of their own (no browser)."""

from __future__ import annotations

import io
import re
from dataclasses import replace

from PIL import Image, ImageDraw

from quarry.operators.gui import critic
from quarry.operators.gui.critic import CriticSettings, critic_candidates
from quarry.operators.gui.dom import Element, Field
from quarry.operators.gui.tasks import (
    TaskSettings,
    describe,
    noun,
    page_tasks,
    referring_expressions,
    task_id,
    task_key,
)
from quarry.operators.gui.wording import EN, LANGUAGES, ZH, ZH_NOUNS
from quarry.operators.ids import content_id
from quarry.schemas.gui import TasksConfig

HAN = re.compile(r"[\u4e00-\u9fff]")


def el(tag, role, name, box, interactive=False, path=None, input_type=None, name_source="text", field=None):
    x1, y1, x2, y2 = box
    css = (x1 * 1.28, y1 * 0.72, x2 * 1.28, y2 * 0.72)
    return Element(tag=tag, role=role, name=name, interactive=interactive, path=path or f"{tag}-{name}-{x1}-{y1}",
                   box_css=css, box_px=css, box=tuple(box), input_type=input_type, name_source=name_source,
                   field=field)


def login_page():
    """The demo's sign-in form (boxes on the 0-1000 grid of a 1280x720 screenshot)."""
    def at(tag, role, name, box, interactive=False, **kw):
        x1, y1, x2, y2 = box
        css = (x1 * 1.28, y1 * 0.72, x2 * 1.28, y2 * 0.72)
        return Element(tag=tag, role=role, name=name, interactive=interactive, box_css=css, box_px=css,
                       box=tuple(box), **kw)
    return [
        at("h1", "heading", "Sign in", (20, 112, 116, 164), path="body>h1"),
        at("label", None, "Email address", (20, 194, 107, 220), path="body>form>p>label"),
        at("input", "textbox", "Email address", (20, 220, 210, 250), True, path="body>form>p>input#email",
           input_type="email", name_source="label", field=Field(type="email", id="email", label="Email address")),
        at("input", "textbox", "Password", (20, 300, 210, 330), True, path="body>form>p:nth-of-type(2)>input",
           input_type="password", name_source="label", field=Field(type="password", id="pw", label="Password")),
        at("input", "button", "Sign in", (20, 400, 66, 429), True, path="body>form>p:nth-of-type(4)>input",
           name_source="value"),
        at("a", "link", "Forgot your password?", (70, 400, 211, 426), True, path="body>form>p:nth-of-type(4)>a"),
    ]


def screenshot(elements) -> bytes:
    """A white 1280x720 screenshot with ink inside every element's box."""
    im = Image.new("RGB", (1280, 720), "white")
    d = ImageDraw.Draw(im)
    for e in elements:
        x1, y1, x2, y2 = e.box_px
        d.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(30, 30, 30))
        d.line([x1 + 2, (y1 + y2) / 2, x2 - 3, (y1 + y2) / 2], fill=(30, 30, 30), width=2)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def shop_page():
    return [
        el("h2", "heading", "Blue mug", (10, 100, 200, 130)), el("h2", "heading", "Tall mug", (300, 100, 500, 130)),
        el("button", "button", "Add to cart", (10, 200, 100, 230), True),
        el("button", "button", "Add to cart", (300, 200, 390, 230), True),
        el("a", "link", "Edit", (10, 600, 60, 620), True), el("a", "link", "Edit", (10, 900, 60, 920), True),
        el("input", "searchbox", "Search mugs", (600, 10, 800, 40), True, input_type="search",
           name_source="placeholder", field=Field(type="search")),
        el("img", "img", "Blue mug", (10, 20, 60, 90), name_source="alt"),
        el("form", "search", "", (590, 5, 900, 45)),
    ]


def shape(t):
    """What a task is, whatever its wording."""
    return (t.task, t.element.path if t.element else None, t.answer if t.task != "element_perception" else None,
            t.action, t.tier, t.expression_kind, t.similar)


def test_every_english_noun_has_one_chinese_noun_of_its_own():
    from quarry.operators.gui.tasks import NOUNS, TAG_NOUNS

    assert set(NOUNS.values()) | set(TAG_NOUNS.values()) <= set(ZH_NOUNS)
    assert len(set(ZH_NOUNS.values())) == len(ZH_NOUNS)
    assert ZH.noun("article") == "article元素"  # a role without an English noun keeps its name
    assert LANGUAGES == ("en", "zh") and TasksConfig().language == "en"


def test_chinese_expressions_single_out_the_same_elements():
    page = shop_page()
    en = referring_expressions(page)
    zh = referring_expressions(page, w=ZH)
    assert [x is None for x in en] == [x is None for x in zh]
    assert [x[1] for x in en if x] == [x[1] for x in zh if x]
    zh_by_name = [x[0] for x in zh]
    assert zh_by_name[2] == "“Blue mug”标题下方的“Add to cart”按钮"
    assert zh_by_name[4] == "最上方的“Edit”链接" and zh_by_name[5] == "最下方的“Edit”链接"
    assert zh_by_name[6] == "“Search mugs”搜索框" and zh_by_name[8] == "搜索表单"
    assert en[2][0] == 'the "Add to cart" button below the "Blue mug" heading'  # English as it was


def test_chinese_descriptions_say_only_what_the_screenshot_shows():
    assert describe(el("img", "img", "Quarry logo", (0, 0, 10, 10), name_source="alt"), ZH) == "图片"
    assert describe(el("h1", "heading", "Mugs", (0, 0, 10, 10)), ZH) == "内容为“Mugs”的标题"
    assert describe(el("input", "textbox", "Password", (0, 0, 10, 10), True, input_type="password",
                       name_source="label"), ZH) == "标签为“Password”的文本框（类型 password）"
    assert describe(el("input", "searchbox", "Search mugs", (0, 0, 10, 10), True, input_type="search",
                       name_source="placeholder"), ZH) == "显示占位文字“Search mugs”的搜索框"
    assert describe(el("button", "button", "Close", (0, 0, 10, 10), True, name_source="aria"), ZH) == "按钮"


def test_chinese_tasks_are_the_english_tasks_worded_in_chinese():
    page = shop_page() + login_page()
    en = page_tasks("page", page, True, TaskSettings())
    zh = page_tasks("page", page, True, TaskSettings(language="zh"))
    assert [shape(t) for t in en] == [shape(t) for t in zh] and len(en) > 20
    for a, b in zip(en, zh):
        assert HAN.search(b.prompt) and not HAN.search(a.prompt)
        assert task_key(a) == task_key(b)  # the English key: the same seeded choices
        assert task_id("page", a) == content_id("gui", "page", task_key(a))  # English ids as they always were
        assert task_id("page", b) != task_id("page", a)
        if a.task == "element_perception":
            assert HAN.search(b.answer)
        if a.element is not None and a.element.name and a.expression:
            assert a.element.name[:70] in b.expression  # page text stays as the page has it
    typed = [t for t in zh if t.action and t.action.startswith("type(")]
    assert typed and all(re.search(r'type\(\d+,\d+,"(.*)"\)', t.action).group(1) in t.prompt for t in typed)
    assert len({task_id("page", t) for t in en + zh}) == len(en) * 2
    # the same capped sample in both languages (chosen on the English keys)
    many = [el("a", "link", f"Item {i}", (10, 10 + 20 * i, 200, 25 + 20 * i), True) for i in range(30)]
    capped = [page_tasks("p", many, False, TaskSettings(max_per_page=5, language=lang)) for lang in LANGUAGES]
    assert [shape(t) for t in capped[0]] == [shape(t) for t in capped[1]]


def test_chinese_critic_rows_judge_the_same_candidates():
    page = login_page()
    png = screenshot(page)
    out = {}
    for lang in LANGUAGES:
        tasks = page_tasks("page", page, False, TaskSettings(language=lang))
        out[lang] = critic_candidates("page", tasks, page, png, CriticSettings(language=lang))
    en, zh = out["en"], out["zh"]
    assert len(en) == len(zh) > 5
    assert {c.error_kind for c in zh} == {"none", "neighbour", "misread_label", "wrong_text"}
    for a, b in zip(en, zh):
        assert (a.error_kind, a.answer, a.box, a.iou, a.tier, a.verdict) == (b.error_kind, b.answer, b.box, b.iou,
                                                                              b.tier, b.verdict)
        assert HAN.search(critic.question(b)) and HAN.search(b.reason) and not HAN.search(a.reason)
        assert critic.answer(a) == a.verdict and critic.answer(b) == {"correct": "正确", "incorrect": "错误"}[b.verdict]
        assert critic.candidate_id("page", a) != critic.candidate_id("page", b)
    misread = next(b for b in zh if b.error_kind == "misread_label")
    assert misread.reason.startswith("候选答案把") and "截图上显示的是“" in misread.reason
    # English critic text as it was
    assert critic.question(en[0]).startswith("A model was given this task on the screenshot:")


def test_wording_tables_have_the_same_slots():
    for name in EN.__dataclass_fields__:
        a, b = getattr(EN, name), getattr(ZH, name)
        if isinstance(a, str):
            assert set(re.findall(r"{(\w+)}", a)) == set(re.findall(r"{(\w+)}", b)), name
        if isinstance(a, dict):
            assert set(a) == set(b), name
    assert replace(ZH, language="zh") == ZH
    assert noun(el("td", None, "x", (0, 0, 1, 1))) == "table cell"
