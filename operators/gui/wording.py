"""The gui DAG's wording per language (`tasks.language`: en | zh): element nouns, referring expressions,
descriptions, task prompts, critic prompts and reasons, UI-to-code prompts and goal-level instructions.

What a task is (its element, box, action, typed text, tier) never depends on the language: tasks are
chosen on English keys (the noun groups that decide ambiguity, the seeded choices), then worded. Page
text quoted from the screenshot (names, labels, typed values) stays as the page has it; only the words
around it change. Chinese quotes page text in corner-free double quotes (“...”), English in "...".

Nouns: English nouns are the keys (operators/gui/tasks.py `NOUNS`, `TAG_NOUNS`); `ZH_NOUNS` maps each to
one Chinese noun, no two the same, so an expression unique in English stays unique in Chinese. A role
without an English noun is named by the role ("article元素").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ZH_NOUNS: dict[str, str] = {
    # NOUNS (roles)
    "link": "链接", "button": "按钮", "text field": "文本框", "search field": "搜索框", "checkbox": "复选框",
    "radio button": "单选按钮", "drop-down": "下拉框", "list box": "列表框", "slider": "滑块", "number field": "数字框",
    "image": "图片", "heading": "标题", "navigation bar": "导航栏", "tab": "选项卡", "menu item": "菜单项",
    "switch": "开关", "paragraph": "段落", "list item": "列表项", "table cell": "表格单元格", "column header": "列标题",
    "code": "代码", "option": "选项", "progress bar": "进度条", "dialog": "对话框", "term": "术语",
    "definition": "定义", "header": "页眉", "footer": "页脚", "quotation": "引文", "separator": "分隔线",
    "table": "表格", "list": "列表", "search form": "搜索表单", "form": "表单", "region": "区域", "alert": "警告",
    "group": "分组", "toolbar": "工具栏", "menu": "菜单", "tab list": "选项卡列表", "status message": "状态消息",
    # TAG_NOUNS (tags without a role)
    "text": "文字", "text block": "文本块", "label": "标签", "code block": "代码块", "icon": "图标", "canvas": "画布",
    "video": "视频", "embedded frame": "内嵌框架", "emphasised text": "强调文字", "bold text": "粗体文字",
    "italic text": "斜体文字", "small text": "小号文字", "key": "按键", "caption": "说明文字", "legend": "图例",
    "abbreviation": "缩写", "citation": "引用来源", "time": "时间", "highlighted text": "高亮文字",
    # fallbacks
    "clickable element": "可点击元素", "element": "元素",
}
assert len(set(ZH_NOUNS.values())) == len(ZH_NOUNS), "two English nouns share a Chinese one"


@dataclass(frozen=True)
class Wording:
    language: str
    quote: tuple[str, str]  # around page text
    noun: Callable[[str], str]  # English noun -> this language's
    phrase: str  # {name} quoted, {noun}
    the: str  # a referring expression from a phrase: {phrase}
    relations: dict[str, str]  # "left of" ... -> {phrase} {anchor} (the anchor's expression)
    extremes: dict[str, str]  # "topmost" ... -> {phrase}
    # element_perception answers
    article: Callable[[str], str]  # "a link" / "链接"
    input_type: str  # {what} {type}
    placeholder: str  # {what} {name}
    labelled: str  # {what} {name}: interactive elements
    reading: str  # {what} {name}: the others
    # prompts
    perception: str  # {box}
    grounding: str  # {expr}
    type_instr: str  # {text} {expr}
    click_instr: str  # {expr}
    scroll_instr: str
    action_suffix: str  # after the instruction (joined by `joiner`)
    joiner: str
    # critic
    critic_prompt: str  # {task} {candidate}
    verdicts: dict[str, str]  # correct | incorrect -> the answer word
    where: dict[str, str]  # grounding | click | type -> where the candidate points: {x} the element
    neighbour_reason: str  # {located} (`where` of the other element) {expr}
    another: str  # {phrase}: an element with the target's noun and name
    other: str  # {phrase}: any other element
    misread_reason: str  # {what} {variant} {truth}
    misread_what: dict[str, str]  # label | text
    wrong_text_reason: str  # {text} {what} {expr} {typed}
    value_for: str  # {expr}: the value another field gets
    text_kinds: dict[str, str]  # what a wrong text is, from the English: "an email address", "a search query", "a name"
    positive_reason: str  # {located} (`where` of the target)
    # ui_code
    ui_to_code: str  # {width} {height} {dsf}
    code_to_ui: str
    # goal_action (operators/gui/goals.py)
    goal_forms: dict[str, str]  # form family (sign_in | sign_up | subscribe | other) -> {label} {values}
    goal_search: str  # {query}
    goal_carts: dict[str, str]  # cart | basket | bag | buy -> {product}
    goal_page: str  # {name}
    goal_section: str  # {name}
    field_values: dict[str, str]  # field kind -> {value}; `labelled`: {value} {name}
    and_: tuple[str, str]  # list joiners: between items, before the last
    goal_prompt: str  # {goal} {history} {hint} {suffix}
    no_history: str
    history: str  # {lines}: numbered actions
    form_hint: str
    # trajectory (operators/gui/explore.py: goal_text, step_prompt)
    traj_goal: str  # {steps} {url}
    traj_then: str  # between steps
    traj_open: str  # {target}: a link's text
    traj_link: str  # a link without text
    traj_typed: str  # {value} {field}
    traj_fill: str  # {typed} {button}
    traj_fill_only: str  # {typed}: a form left unsubmitted
    traj_field: str
    traj_submit: str
    traj_history: str  # {lines}: numbered actions; the screenshot is after them

    def q(self, text: str) -> str:
        return self.quote[0] + text + self.quote[1]

    def listing(self, items: list[str]) -> str:
        """"a", "a and b", "a, b and c" (or the language's own joiners)."""
        between, last = self.and_
        return items[0] if len(items) == 1 else between.join(items[:-1]) + last + items[-1]


def _en_article(n: str) -> str:
    return f"{'an' if n[:1] in 'aeiou' else 'a'} {n}"


EN = Wording(
    language="en", quote=('"', '"'), noun=lambda n: n, phrase="{name} {noun}", the="the {phrase}",
    relations={r: "the {phrase} " + r + " {anchor}" for r in ("left of", "right of", "above", "below")},
    extremes={w: "the " + w + " {phrase}" for w in ("topmost", "bottommost", "leftmost", "rightmost")},
    article=_en_article, input_type="{what} ({type})", placeholder="{what} showing the placeholder {name}",
    labelled="{what} labelled {name}", reading="{what} reading {name}",
    perception=("What is the element at {box} in this screenshot (0-1000 coordinates)? "
                "Say what kind of element it is and what it says."),
    grounding="Where is {expr}? Give its box as [x1,y1,x2,y2] on a 0-1000 grid.",
    type_instr='Type "{text}" into {expr}.', click_instr="Click {expr}.",
    scroll_instr="Scroll down to see more of the page.",
    action_suffix=("Answer with one action: click(x,y), type(x,y,\"text\") or scroll(x,y,\"down\"), "
                   "coordinates on a 0-1000 grid."),
    joiner=" ",
    critic_prompt=("A model was given this task on the screenshot:\n{task}\nIts answer: {candidate}\n"
                   "Check the answer against the screenshot: is it right about the element it names and where it "
                   "points? Answer with one word: correct or incorrect."),
    verdicts={"correct": "correct", "incorrect": "incorrect"},
    where={"grounding": "the box is on {x}", "click": "the click lands on {x}", "type": "the text goes into {x}"},
    neighbour_reason="{located}, the instruction asks for {expr}",
    another="another {phrase}", other="a {phrase}",
    misread_reason="the candidate reads the {what} as {variant}, the screenshot shows {truth}",
    misread_what={"label": "label", "text": "text"},
    wrong_text_reason='the action types "{text}" ({what}) into {expr}, the instruction asks to type "{typed}"',
    value_for="the value for {expr}",
    text_kinds={k: k for k in ("an email address", "a search query", "a name")},
    positive_reason="{located}, which the instruction asks for",
    ui_to_code=("Write one self-contained HTML document that renders exactly like this screenshot in a browser "
                "window of {width}x{height} CSS pixels (device scale factor {dsf}): all styles inside the document, "
                "no scripts, no external resources. Reply with the HTML only."),
    code_to_ui=("Draw the screenshot that the HTML document in `html` renders to in a browser window of "
                "{width}x{height} CSS pixels (device scale factor {dsf})."),
    goal_forms={"sign_in": "{label} with {values}.", "sign_up": "{label} with {values}.",
                "subscribe": "{label} with {values}.", "other": "Submit the {label} form with {values}."},
    goal_search="Search for {query}.",
    goal_carts={"cart": "Add the {product} to the cart.", "basket": "Add the {product} to the basket.",
                "bag": "Add the {product} to the bag.", "buy": "Buy the {product}."},
    goal_page="Go to the {name} page.", goal_section="Jump to the {name} section of this page.",
    field_values={"email": "the email address {value}", "password": "the password {value}",
                  "username": "the username {value}", "name": "the name {value}",
                  "given-name": "the first name {value}", "family-name": "the last name {value}",
                  "tel": "the phone number {value}", "postal-code": "the postal code {value}",
                  "city": "the city {value}", "address": "the address {value}", "url": "the website {value}",
                  "message": "the message {value}", "date": "the date {value}", "time": "the time {value}",
                  "labelled": "{value} for {name}"},
    and_=(", ", " and "),
    goal_prompt="Goal: {goal}\n{history}\nWhat is the next action toward the goal?{hint} {suffix}",
    no_history="Actions so far: none.",
    history="Actions so far (the screenshot was taken before them):\n{lines}",
    form_hint=" Fill in the form's fields from top to bottom, then submit it.",
    traj_goal="Starting here, {steps}; you should end at {url}.", traj_then=", then ", traj_open="open {target}",
    traj_link="follow the link", traj_typed="{value} as {field}", traj_fill="fill in {typed} and press {button}",
    traj_fill_only="fill in {typed}", traj_field="the field", traj_submit="submit",
    traj_history="Actions so far (the screenshot shows the page after them):\n{lines}",
)

ZH = Wording(
    language="zh", quote=("“", "”"), noun=lambda n: ZH_NOUNS.get(n, f"{n}元素"), phrase="{name}{noun}",
    the="{phrase}",
    relations={"left of": "{anchor}左侧的{phrase}", "right of": "{anchor}右侧的{phrase}",
               "above": "{anchor}上方的{phrase}", "below": "{anchor}下方的{phrase}"},
    extremes={"topmost": "最上方的{phrase}", "bottommost": "最下方的{phrase}", "leftmost": "最左侧的{phrase}",
              "rightmost": "最右侧的{phrase}"},
    article=lambda n: n, input_type="{what}（类型 {type}）", placeholder="显示占位文字{name}的{what}",
    labelled="标签为{name}的{what}", reading="内容为{name}的{what}",
    perception="截图中位于{box}的元素是什么（坐标为 0-1000）？请说明它是哪种元素，以及上面写了什么。",
    grounding="{expr}在哪里？请以 0-1000 网格上的 [x1,y1,x2,y2] 给出它的边框。",
    type_instr="在{expr}中输入“{text}”。", click_instr="点击{expr}。",
    scroll_instr="向下滚动，查看页面的更多内容。",
    action_suffix="请只回答一个动作：click(x,y)、type(x,y,\"text\") 或 scroll(x,y,\"down\")，坐标取 0-1000 网格。",
    joiner="",
    critic_prompt=("一个模型在这张截图上接到以下任务：\n{task}\n它的回答：{candidate}\n"
                   "请对照截图检查这个回答：它所说的元素和它指向的位置是否都正确？只用一个词回答：正确 或 错误。"),
    verdicts={"correct": "正确", "incorrect": "错误"},
    where={"grounding": "边框框住的是{x}", "click": "点击落在了{x}上", "type": "文字输入到了{x}中"},
    neighbour_reason="{located}，而指令要求的是{expr}",
    another="另一个{phrase}", other="{phrase}",
    misread_reason="候选答案把{what}读成了{variant}，截图上显示的是{truth}",
    misread_what={"label": "标签", "text": "文字"},
    wrong_text_reason="该动作向{expr}输入了“{text}”（{what}），而指令要求输入“{typed}”",
    value_for="{expr}应填的值",
    text_kinds={"an email address": "一个电子邮件地址", "a search query": "一个搜索词", "a name": "一个姓名"},
    positive_reason="{located}，正是指令要求的",
    ui_to_code=("写出一个自包含的 HTML 文档，使它在 {width}x{height} CSS 像素（设备像素比 {dsf}）的浏览器窗口中"
                "渲染得与这张截图完全一样：样式全部写在文档内，不用脚本，不引用外部资源。只回复 HTML。"),
    code_to_ui="画出 `html` 中的 HTML 文档在 {width}x{height} CSS 像素（设备像素比 {dsf}）的浏览器窗口中渲染出的截图。",
    goal_forms={"sign_in": "用{values}登录。", "sign_up": "用{values}注册。", "subscribe": "用{values}订阅。",
                "other": "用{values}提交{label}表单。"},
    goal_search="搜索{query}。",
    goal_carts={"cart": "把{product}加入购物车。", "basket": "把{product}加入购物篮。", "bag": "把{product}加入购物袋。",
                "buy": "购买{product}。"},
    goal_page="打开{name}页面。", goal_section="跳转到本页的{name}部分。",
    field_values={"email": "电子邮件地址{value}", "password": "密码{value}", "username": "用户名{value}",
                  "name": "姓名{value}", "given-name": "名字{value}", "family-name": "姓氏{value}",
                  "tel": "电话号码{value}", "postal-code": "邮政编码{value}", "city": "城市{value}",
                  "address": "地址{value}", "url": "网址{value}", "message": "留言{value}", "date": "日期{value}",
                  "time": "时间{value}", "labelled": "{name}填{value}"},
    and_=("、", "和"),
    goal_prompt="目标：{goal}\n{history}\n为完成这个目标，下一步动作是什么？{hint}{suffix}",
    no_history="已执行的动作：无。",
    history="已执行的动作（截图拍摄于这些动作之前）：\n{lines}",
    form_hint="请按从上到下的顺序填写表单字段，然后提交。",
    traj_goal="从这里开始，{steps}；最后应到达 {url}。", traj_then="，然后", traj_open="打开{target}",
    traj_link="点击链接", traj_typed="{field}填{value}", traj_fill="填写{typed}，再点击{button}",
    traj_fill_only="填写{typed}", traj_field="该字段", traj_submit="提交",
    traj_history="已执行的动作（截图显示这些动作之后的页面）：\n{lines}",
)

WORDINGS: dict[str, Wording] = {"en": EN, "zh": ZH}
LANGUAGES: tuple[str, ...] = tuple(WORDINGS)
