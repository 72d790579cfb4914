"""Recaption operator: the client against real local HTTP servers (the real httpx code to the wire), the checks as
a table of (original, recaption, reason)."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quarry.operators import recaption as ops
from quarry.operators.recaption import Checks, ClientSettings, RecaptionClient, check_recaption, load_prompt

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
GOOD = "A red double-decker bus crosses Westminster Bridge in London, with 3 people waiting at the stop."


def completion(text, finish_reason="stop"):
    return {"id": "c", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}]}


def settings(url, **kw):
    base = dict(model="recap", timeout_s=2.0, max_retries=2, backoff_s=0.01, max_backoff_s=1.0, max_concurrency=4)
    base.update(kw)
    return ClientSettings(base_url=url, **base)


def ask(url, n=1, **kw):
    with RecaptionClient(settings(url, **kw)) as client:
        return client.run_many([ops.messages_for(load_prompt(), "a bus", "en", JPEG)] * n)


def test_request_is_an_openai_chat_body_with_the_image_as_a_content_part(chat_server):
    s = chat_server(lambda server, body, n: (200, completion(GOOD), None))
    (out,) = ask(s.base_url + "/v1", temperature=0.0, seed=7, extra_body=(("top_p", 0.9),))
    assert (out.text, out.reason, out.attempts) == (GOOD, "ok", 1)
    (req,) = s.requests
    assert req["path"] == "/v1/chat/completions"
    body = json.loads(req["raw"])
    assert {k: body[k] for k in ("model", "temperature", "seed", "n", "top_p", "max_tokens")} == {
        "model": "recap", "temperature": 0.0, "seed": 7, "n": 1, "top_p": 0.9, "max_tokens": 512}
    image, text = body["messages"][0]["content"]
    assert image["type"] == "image_url"
    assert base64.b64decode(image["image_url"]["url"].removeprefix("data:image/jpeg;base64,")) == JPEG
    assert text["type"] == "text" and "<original>a bus</original>" in text["text"] and "in English" in text["text"]


def test_500_is_retried_then_succeeds(chat_server):
    s = chat_server(lambda server, body, n: (500, {"error": "busy"}, None) if n < 3 else (200, completion(GOOD), None))
    (out,) = ask(s.base_url)
    assert (out.reason, out.attempts, len(s.requests)) == ("ok", 3, 3)


def test_500_every_time_is_http_error_after_the_retries(chat_server):
    s = chat_server(lambda server, body, n: (503, {"error": "down for maintenance"}, None))
    (out,) = ask(s.base_url, max_retries=2)
    assert out.reason == ops.HTTP_ERROR and out.detail.startswith("http_503") and "maintenance" in out.detail
    assert len(s.requests) == 3 and out.text is None


def test_400_is_not_retried(chat_server):
    s = chat_server(lambda server, body, n: (400, {"error": "bad image"}, None))
    (out,) = ask(s.base_url)
    assert (out.reason, len(s.requests)) == (ops.HTTP_ERROR, 1)


def test_429_waits_retry_after(chat_server):
    s = chat_server(lambda server, body, n: (429, {}, {"Retry-After": "0.4"}) if n == 1 else (200, completion(GOOD), None))
    t0 = time.monotonic()
    (out,) = ask(s.base_url, backoff_s=0.0)
    assert out.reason == "ok" and out.attempts == 2
    assert time.monotonic() - t0 >= 0.4  # the server's Retry-After, not the (zero) backoff


def test_429_every_time_is_rate_limited(chat_server):
    s = chat_server(lambda server, body, n: (429, {}, {"Retry-After": "0"}))
    (out,) = ask(s.base_url, max_retries=3)
    assert (out.reason, len(s.requests)) == (ops.RATE_LIMITED, 4)


@pytest.mark.parametrize("payload, detail", [(b"{not json", "not JSON"), ({"choices": []}, "no choices"),
                                             ({"choices": [{"message": {"content": 5}}]}, "content is int")])
def test_malformed_bodies_are_malformed_response_and_not_retried(chat_server, payload, detail):
    s = chat_server(lambda server, body, n: (200, payload, None))
    (out,) = ask(s.base_url)
    assert out.reason == ops.MALFORMED_RESPONSE and detail in out.detail and len(s.requests) == 1


def test_huge_body_is_response_too_large(chat_server):
    s = chat_server(lambda server, body, n: (200, completion("word " * 100_000), None))
    (out,) = ask(s.base_url, max_response_bytes=10_000)
    assert out.reason == ops.RESPONSE_TOO_LARGE and len(s.requests) == 1


def test_cut_at_max_tokens_is_truncated(chat_server):
    s = chat_server(lambda server, body, n: (200, completion("A red bus crosses the", "length"), None))
    assert ask(s.base_url)[0].reason == ops.TRUNCATED


def test_slow_server_times_out_per_request_and_is_retried(chat_server):
    def slow(server, body, n):
        server.release.wait(3)
        return 200, completion(GOOD), None

    s = chat_server(slow)
    t0 = time.monotonic()
    (out,) = ask(s.base_url, timeout_s=0.3, max_retries=1)
    assert out.reason == ops.TIMEOUT and out.attempts == 2 and len(s.requests) == 2
    assert time.monotonic() - t0 < 2.0


def test_run_timeout_bounds_the_whole_run(chat_server):
    def slow(server, body, n):
        server.release.wait(5)
        return 200, completion(GOOD), None

    s = chat_server(slow)
    t0 = time.monotonic()
    outs = ask(s.base_url, n=6, timeout_s=4.0, run_timeout_s=0.5, max_concurrency=2)
    assert [o.reason for o in outs] == [ops.RUN_TIMEOUT] * 6  # waiting ones too: none is lost, none hangs
    assert time.monotonic() - t0 < 2.0


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_endpoint_down_is_unreachable_after_the_retries():
    (out,) = ask(f"http://127.0.0.1:{_closed_port()}", max_retries=2)
    assert out.reason == ops.UNREACHABLE and out.attempts == 3 and "ConnectError" in out.detail


def test_requests_are_in_flight_together(chat_server):
    def slow(server, body, n):
        time.sleep(0.5)
        return 200, completion(GOOD), None

    s = chat_server(slow)
    t0 = time.monotonic()
    outs = ask(s.base_url, n=16, max_concurrency=8)
    took = time.monotonic() - t0
    assert all(o.ok for o in outs) and 4 < s.max_in_flight <= 8  # never over max_concurrency
    assert took < 3.0  # about two waves of 0.5 s; one at a time would take 8 s


class _KeepAlive:
    """An HTTP/1.1 server (connections stay open) that records which connection each request came on."""

    def __init__(self, models=("recap",)):
        self.peers, outer = [], self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, payload):
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.peers.append(self.client_address)
                self._send(completion(GOOD))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_connections_are_reused():
    server = _KeepAlive()
    try:
        with RecaptionClient(settings(server.base_url, max_concurrency=2)) as client:
            for _ in range(3):
                assert all(o.ok for o in client.run_many([ops.messages_for("{caption}", "x", "en", JPEG)] * 10))
        assert len(server.peers) == 30 and len(set(server.peers)) <= 2  # the pool's connections, not 30
    finally:
        server.close()


def test_preflight_says_what_is_wrong():
    server = _KeepAlive(models=("recap",))
    try:
        assert ops.preflight(server.base_url, "recap") is None
        assert ops.preflight(server.base_url + "/v1/chat/completions", "recap") is None
        assert "'other' is not served" in ops.preflight(server.base_url, "other") and "recap" in ops.preflight(
            server.base_url, "other")
    finally:
        server.close()
    assert "unreachable" in ops.preflight(f"http://127.0.0.1:{_closed_port()}", "recap")


def test_urls():
    assert ops.chat_url("http://h:8000") == ops.chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert ops.chat_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1/chat/completions"


def test_retry_after_is_the_chat_clients():
    """One Retry-After parser (operators/chat_client.py; tests/operators/test_chat_client.py holds its table)."""
    import email.utils

    from quarry.operators import chat_client

    assert ops.retry_after is chat_client.retry_after
    assert 8 <= ops.retry_after(email.utils.formatdate(time.time() + 10, usegmt=True)) <= 10


# --- prompt ------------------------------------------------------------------------------------------------------


def test_shipped_prompt_and_an_override(tmp_path):
    shipped = load_prompt()
    assert "{caption}" in shipped and "named entit" in shipped
    mine = tmp_path / "p.txt"
    mine.write_text("Describe {caption} in {language}, with {braces} kept", encoding="utf-8")
    assert ops.render_prompt(load_prompt(str(mine)), "a {cat}", "zh") == "Describe a {cat} in Chinese (简体中文), with {braces} kept"
    (tmp_path / "bad.txt").write_text("no placeholder")
    with pytest.raises(ops.PromptError, match="no \\{caption\\} placeholder"):
        load_prompt(str(tmp_path / "bad.txt"))
    with pytest.raises(ops.PromptError, match="cannot read"):
        load_prompt(str(tmp_path / "missing.txt"))


# --- checks ------------------------------------------------------------------------------------------------------

PROMPT = load_prompt()
LONG_EN = " on a quiet street in the late afternoon sun, with long soft shadows across the pavement."

CHECKS = [
    ("a red bus in London", "A red bus drives through central London" + LONG_EN, None),
    ("a red bus", "", ops.EMPTY),
    ("a red bus", "   \n ", ops.EMPTY),
    ("a red bus", PROMPT, ops.PROMPT_ECHO),
    ("a red bus", "Sure! " + PROMPT.replace("{caption}", "a red bus"), ops.PROMPT_ECHO),
    ("a red bus", "I'm sorry, but I can't help with identifying this image.", ops.REFUSAL),
    ("a red bus", "As an AI language model, I cannot see images, but a red bus" + LONG_EN, ops.REFUSAL),
    ("一辆红色的公交车", "抱歉，我无法描述这张图片。", ops.REFUSAL),
    ("a red bus", "The image shows a red bus" + LONG_EN, ops.BOILERPLATE),
    ("a red bus", "In this picture, a red bus" + LONG_EN, ops.BOILERPLATE),
    ("一辆红色的公交车", "图片显示了一辆红色的公交车停在安静的街道上，阳光照在车身上。", ops.BOILERPLATE),
    ("a red bus", "A red bus.", ops.TOO_SHORT),
    ("a red bus", "A red bus " + "and more " * 300, ops.TOO_LONG),
    ("一辆红色的公交车", "红色公交车", ops.TOO_SHORT),  # 5 characters: 5 words
    ("一辆红色的公交车在街上", "一辆红色的双层公交车行驶在安静的街道上，午后的阳光在路面投下长长的影子。", None),
    ("一辆红色的公交车在街上", "A red double-decker bus drives" + LONG_EN, ops.WRONG_LANGUAGE),
    ("a red bus driving on the street", "一辆红色的双层公交车行驶在安静的街道上，午后的阳光在路面投下长长的影子。",
     ops.WRONG_LANGUAGE),
    ("a sunny street scene with a red bus and many people walking to work",
     "Un autobus rouge à impériale traverse une rue calme en fin d'après-midi, avec de longues ombres douces.",
     ops.WRONG_LANGUAGE),
    ("a shop front", "A shop front with a green awning" + LONG_EN, None),  # a short original: 'pcm' to py3langid
    ("3 red buses", "Three red buses are parked in a row" + LONG_EN, None),
    ("2 红色的公交车", "两辆红色的双层公交车停在安静的街道上，午后的阳光在路面投下长长的影子。", None),
    ("a bus with 1,200 passengers", "A bus carrying 1200 passengers" + LONG_EN, None),
    ("bus number 42 at 10:30", "A bus with the number 42 waits" + LONG_EN, ops.DROPPED_NUMBER),
    ("a bus in London near Big Ben", "A red bus drives past Big Ben" + LONG_EN, ops.DROPPED_ENTITY),
    ("Red bus near the Tower of London", "A red bus waits near the Tower of London" + LONG_EN, None),
    ("an iPhone on a desk", "A black smartphone lies on a wooden desk" + LONG_EN, ops.DROPPED_ENTITY),
    ("《红楼梦》的封面", "一本古旧的书放在木桌上，封面上是红色的花纹和金色的装饰图案。", ops.DROPPED_ENTITY),
    ("《红楼梦》的封面", "一本《红楼梦》放在木桌上，封面上是红色的花纹和金色的装饰图案。", None),
    # Chinese names outside quotes (jieba's POS tags): kept, dropped, and common nouns that are not names
    ("游客在北京的故宫前拍照", "许多游客站在北京故宫的红色宫墙前拍照留念，阳光照在金色的屋顶上。", None),
    ("游客在北京的故宫前拍照", "许多游客站在一座古老宫殿的红色宫墙前拍照留念，阳光照在金色的屋顶上。", ops.DROPPED_ENTITY),
    ("游客在北京的故宫前拍照", "许多游客站在故宫的红色宫墙前拍照留念，阳光照在金色的屋顶上。", ops.DROPPED_ENTITY),
    ("李白的诗刻在黄山的石头上", "黄山一块巨大的石头上刻着几行古诗，字迹已经有些模糊，旁边长着青苔。", ops.DROPPED_ENTITY),
    ("周杰伦在台北开演唱会", "周杰伦在台北的体育场举办演唱会，舞台上灯光闪烁，台下坐满了观众。", None),
    ("一只黑猫坐在红色的沙发上", "一只黑色的小猫安静地蹲在一张红色布艺长椅上，眼睛望向窗外的光。", None),
    ("两只狗在海滩上玩耍", "两只棕色的狗在海边的沙地上追逐打闹，远处的海浪拍打着岸边的礁石。", None),
    ("夜晚的城市灯火通明", "夜色中的都市高楼林立，无数窗户亮着灯，街道上的车流留下长长的光带。", None),
]


# Chinese names: 24 everyday captions without names and 16 with 26 (the figures in operators/recaption.py).
ZH_PLAIN = ["一只橘猫趴在窗台上晒太阳", "桌上放着一杯热咖啡和一本书", "孩子们在操场上踢足球", "雨后的街道上倒映着路灯",
            "一盘刚出锅的饺子冒着热气", "山间的小路两旁开满了野花", "厨房里挂着几把锅铲和勺子", "一个女孩在公园的长椅上看书",
            "冬天的湖面结了一层薄冰", "超市货架上摆满了各种水果", "一辆白色的小汽车停在路边", "老人牵着一条小狗散步",
            "夜晚的城市灯火通明", "海边的沙滩上有许多贝壳", "一群鸽子在广场上觅食", "农民在田里收割金黄的稻谷",
            "木桌上放着一碗新鲜的水果", "一只熊猫在竹林里吃竹子", "一把吉他靠在沙发旁边", "办公室里的电脑屏幕亮着",
            "一碗牛肉面上撒着香菜", "下雪天人们撑着伞走在路上", "一棵大树下停着几辆自行车", "蓝天白云下的草原上有一群羊"]
ZH_NAMED = [("游客在北京的故宫前拍照", {"北京", "故宫"}), ("上海外滩的夜景", {"上海", "外滩"}),
            ("李白的诗刻在黄山的石头上", {"李白", "黄山"}), ("清华大学的校门", {"清华大学"}),
            ("毛泽东的画像挂在天安门上", {"毛泽东", "天安门"}), ("周杰伦在台北开演唱会", {"周杰伦", "台北"}),
            ("华为公司在深圳发布了新手机", {"华为公司", "深圳"}), ("杭州西湖边的柳树", {"杭州", "西湖"}),
            ("长江上的一艘货船", {"长江"}), ("西安的兵马俑博物馆", {"西安", "兵马俑"}),
            ("布达拉宫在蓝天下", {"布达拉宫"}), ("鲁迅的故居门口", {"鲁迅"}),
            ("香港维多利亚港的烟花", {"香港", "维多利亚港"}), ("巴黎的埃菲尔铁塔", {"巴黎", "埃菲尔铁塔"}),
            ("姚明在篮球场上投篮", {"姚明"}), ("中央电视台的大楼", {"中央电视台"})]


def test_chinese_names_are_found_and_common_nouns_mostly_not():
    false = {c: ops.chinese_entities(c) for c in ZH_PLAIN if ops.chinese_entities(c)}
    assert false == {"农民在田里收割金黄的稻谷": ["金黄"], "木桌上放着一碗新鲜的水果": ["新鲜"],
                     "一只熊猫在竹林里吃竹子": ["竹林"]}  # the known misses: jieba's dictionary tags them names
    found = {c: set(ops.chinese_entities(c)) for c, _names in ZH_NAMED}
    assert sum(len(found[c] & names) for c, names in ZH_NAMED) == 25  # all but 兵马俑 (in 兵马俑博物馆)
    assert all(found[c] <= names for c, names in ZH_NAMED)
    assert ops.entities_of("游客在北京的故宫前拍照") == ["北京", "故宫"]
    assert ops.entities_of("在“北京”拍照 near the Great Wall") [:2] == ["北京", "Great Wall"]
    assert ops.entities_of("東京タワーの夜景", "ja") == []  # Japanese text is not run through jieba
    assert ops.entities_of("北京的夜景", "en") == []  # nor is a caption the caller says is not Chinese


def test_jieba_loads_quietly_and_offline(tmp_path):
    """A fresh process with an empty temp dir (jieba then builds its dictionary cache): no output at all."""
    import subprocess
    import sys

    code = ("import socket\n"
            "def no_network(*a, **k): raise OSError('network used')\n"
            "socket.socket.connect = no_network\n"
            "from quarry.operators.recaption import entities_of\n"
            "assert entities_of('游客在北京的故宫前拍照') == ['北京', '故宫']\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert list(tmp_path.glob("jieba*.cache"))  # the cache went where the temp dir is, nowhere else


@pytest.mark.parametrize("original, recaption, reason", CHECKS)
def test_checks(original, recaption, reason):
    verdict = check_recaption(original, recaption, PROMPT, Checks())
    assert (verdict.reason if verdict else None) == reason, verdict


def test_checks_can_be_turned_off_and_a_language_required():
    text = "A bus with the number 7 waits" + LONG_EN
    assert check_recaption("bus 42 in London", text, PROMPT, Checks(numbers=False, entities=False)) is None
    assert check_recaption("bus 42", text, PROMPT, Checks(numbers=False, lang="zh")).reason == ops.WRONG_LANGUAGE


@pytest.mark.parametrize("recaption, ocr, contradicts", [
    ('A shop front with a sign reading "OPEN 24 HOURS" above the door' + LONG_EN, ["OPEN 24 H0URS"], False),
    ('A shop front with a sign reading "CLOSED FOREVER" above the door' + LONG_EN, ["OPEN 24 HOURS"], True),
    ('A shop front with a sign reading "CLOSED FOREVER" above the door' + LONG_EN, [], False),  # OCR read nothing
    ('A poster with the title “Summer Festival 2024” in large letters' + LONG_EN,
     ["SUMMER", "FESTIVAL 2024", "Tickets at the door"], False),
])
def test_ocr_contradiction(recaption, ocr, contradicts):
    verdict = check_recaption("a shop front", recaption, PROMPT, Checks(), ocr_texts=ocr)
    assert (verdict is not None and verdict.reason == ops.OCR_CONTRADICTION) == contradicts, verdict


def test_merge_choice_is_seeded_by_id():
    ids = [f"id{i}" for i in range(4000)]
    picked = [ops.train_on_recaption(i, 0.3, 0) for i in ids]
    assert picked == [ops.train_on_recaption(i, 0.3, 0) for i in ids]  # a rerun agrees
    assert 0.27 < sum(picked) / len(ids) < 0.33
    assert picked != [ops.train_on_recaption(i, 0.3, 1) for i in ids]  # another seed, another split
    assert not any(ops.train_on_recaption(i, 0.0, 0) for i in ids) and all(ops.train_on_recaption(i, 1.0, 0) for i in ids)


def test_every_reason_is_listed_once():
    assert len(set(ops.REASONS)) == len(ops.REASONS) and ops.OK not in ops.REASONS
