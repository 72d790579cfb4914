"""Recaptioning (GLM-4.5V §3.1, step 4): ask a served model for a factual caption, then check it against the original.

Three parts, each usable alone:

- `RecaptionClient`: requests to the OpenAI-compatible ``/v1/chat/completions`` endpoint that vLLM and
  SGLang serve, many in flight at once. One `httpx.AsyncClient` (a keep-alive connection pool of
  ``max_concurrency`` connections) on an asyncio loop in a thread of its own, so a Beam DoFn hands requests
  over without blocking (`submit` returns a `concurrent.futures.Future`) and throughput stays near
  concurrency / latency. httpx rather than the `openai` SDK (which is built on httpx too): every way a request
  can fail must become a distinct reject reason (rate limited, timed out, unreachable, malformed, too large,
  truncated), with a per-run deadline and a bound on the body read; the SDK's own retry loop hides those
  behind one exception and reads any body whole. Rather than `operators/chat_client.py` (stdlib, a
  connection and a thread per request in flight): connection reuse and thousands of requests in flight on
  one thread.
- `check_recaption(...)`: the factuality checks, each a reason code (a `Rejection`) or None.
- `messages_for` / `load_prompt`: the request, an image part and the shipped (or a given) prompt.

Failure is data: `Outcome` holds a text or a reason, never an exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Optional, Sequence

from quarry.operators.base import Rejection
from quarry.operators.chat_client import image_part, retry_after
from quarry.operators.heuristics import caption_stats
from quarry.operators.lang import UNDETERMINED, detect_lang

# --- reason codes ---------------------------------------------------------------------------------------------
# transport (the request did not give a usable reply)
RATE_LIMITED = "rate_limited"  # 429 after every retry
HTTP_ERROR = "http_error"  # 5xx after every retry, or a 4xx that is not retried
TIMEOUT = "timeout"  # every attempt ran past recaption.timeout_s
RUN_TIMEOUT = "run_timeout"  # recaption.run_timeout_s ran out before a reply
UNREACHABLE = "endpoint_unreachable"  # connection refused / reset / DNS, after every retry
MALFORMED_RESPONSE = "malformed_response"  # 200 whose body is not a chat completion
RESPONSE_TOO_LARGE = "response_too_large"  # body over recaption.max_response_bytes
TRUNCATED = "truncated"  # finish_reason "length": cut at max_tokens
# the recaption itself
EMPTY = "empty_recaption"
PROMPT_ECHO = "prompt_echo"
REFUSAL = "refusal"
BOILERPLATE = "boilerplate"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
WRONG_LANGUAGE = "wrong_language"
DROPPED_NUMBER = "dropped_number"
DROPPED_ENTITY = "dropped_entity"
OCR_CONTRADICTION = "ocr_contradiction"

TRANSPORT_REASONS = (RATE_LIMITED, HTTP_ERROR, TIMEOUT, RUN_TIMEOUT, UNREACHABLE, MALFORMED_RESPONSE,
                     RESPONSE_TOO_LARGE, TRUNCATED)
CHECK_REASONS = (EMPTY, PROMPT_ECHO, REFUSAL, BOILERPLATE, TOO_SHORT, TOO_LONG, WRONG_LANGUAGE, DROPPED_NUMBER,
                 DROPPED_ENTITY, OCR_CONTRADICTION)
REASONS = TRANSPORT_REASONS + CHECK_REASONS
OK = "ok"

_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
_MAX_DETAIL = 200

# --- prompt and messages --------------------------------------------------------------------------------------

DEFAULT_PROMPT = Path(__file__).parent / "data" / "recaption_prompt.txt"
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese (简体中文)", "ja": "Japanese", "ko": "Korean", "de": "German",
                  "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian"}


class PromptError(ValueError):
    """A prompt file that cannot be used; the message says why."""


def load_prompt(path: Optional[str] = None) -> str:
    """The prompt template (the shipped one without `path`); it must hold ``{caption}``."""
    from apache_beam.io.filesystems import FileSystems  # prompt files may sit on gs:// like other side files

    where = path or str(DEFAULT_PROMPT)
    try:
        with FileSystems.open(where, compression_type="uncompressed") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read prompt file {where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - Beam wraps a missing file in BeamIOError
        raise PromptError(f"cannot read prompt file {where}: {type(e).__name__}: {e}") from None
    if "{caption}" not in text:
        raise PromptError(f"prompt file {where} has no {{caption}} placeholder (where the original caption goes)")
    return text


def render_prompt(template: str, caption: str, lang: str) -> str:
    """The template with the original caption and the language's name (plain replacement: braces in captions stay)."""
    return template.replace("{language}", LANGUAGE_NAMES.get(lang, lang)).replace("{caption}", caption)


def messages_for(template: str, caption: str, lang: str, image: bytes) -> list[dict[str, Any]]:
    """One user message: the image as an ``image_url`` content part (a JPEG data URL), then the prompt."""
    parts: list[dict[str, Any]] = [image_part(image, "image/jpeg")] if image else []
    parts.append({"type": "text", "text": render_prompt(template, caption, lang)})
    return [{"role": "user", "content": parts}]


# --- the client -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to ask (recaption.* of the caption config, flattened for the worker)."""

    base_url: str
    model: str
    api_key: Optional[str] = field(default=None, repr=False)  # read from the environment on the worker; never logged
    max_concurrency: int = 32
    timeout_s: float = 60.0
    run_timeout_s: Optional[float] = None
    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_response_bytes: int = 1_000_000
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int = 0
    extra_body: tuple[tuple[str, Any], ...] = ()

    @property
    def url(self) -> str:
        return chat_url(self.base_url)


def api_root(base_url: str) -> str:
    """``http://host:8000``, ``.../v1`` or ``.../v1/chat/completions`` -> ``http://host:8000/v1``."""
    base = base_url.rstrip("/")
    base = base.removesuffix("/chat/completions")
    return base if base.endswith("/v1") else base + "/v1"


def chat_url(base_url: str) -> str:
    return api_root(base_url) + "/chat/completions"


@dataclass(frozen=True)
class Outcome:
    """One request's result: `text` (status ok), or a `reason` from TRANSPORT_REASONS with a detail."""

    text: Optional[str]
    reason: str = OK
    detail: str = ""
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.reason == OK


class _Failed(Exception):
    def __init__(self, reason: str, detail: str, retryable: bool, retry_after: Optional[float] = None):
        super().__init__(detail)
        self.reason, self.detail, self.retryable, self.retry_after = reason, detail, retryable, retry_after


class RecaptionClient:
    """Chat-completion requests with at most ``max_concurrency`` in flight, on a loop thread of its own.

    `start()` before use (a Beam DoFn: in `setup`), `close()` after. `submit(messages)` returns a
    `concurrent.futures.Future[Outcome]`; `run_many` is the same for a list, in order.
    """

    def __init__(self, settings: ClientSettings, *, rng: Optional[random.Random] = None):
        self.settings = settings
        self._rng = rng or random.Random()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._deadline: Optional[float] = None

    def start(self) -> "RecaptionClient":
        import httpx

        s = self.settings
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="recaption-loop", daemon=True)
        self._thread.start()
        self._loop = loop

        async def make():
            self._sem = asyncio.Semaphore(s.max_concurrency)
            limits = httpx.Limits(max_connections=s.max_concurrency, max_keepalive_connections=s.max_concurrency)
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if s.api_key:
                headers["Authorization"] = f"Bearer {s.api_key}"
            # The pool wait is part of no attempt's time: the semaphore keeps it at zero.
            return httpx.AsyncClient(limits=limits, headers=headers, timeout=httpx.Timeout(s.timeout_s, pool=None))

        self._http = asyncio.run_coroutine_threadsafe(make(), loop).result()
        return self

    def close(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._http.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "RecaptionClient":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, messages: list[dict[str, Any]]) -> "concurrent.futures.Future[Outcome]":
        if self._loop is None:
            raise RuntimeError("RecaptionClient.start() was not called")
        if self._deadline is None and self.settings.run_timeout_s is not None:
            self._deadline = time.monotonic() + self.settings.run_timeout_s  # the run's clock starts at its first ask
        return asyncio.run_coroutine_threadsafe(self.request(messages), self._loop)

    def run_many(self, conversations: Sequence[list[dict[str, Any]]]) -> list[Outcome]:
        futures = [self.submit(m) for m in conversations]
        return [f.result() for f in futures]

    def body(self, messages: list[dict[str, Any]]) -> bytes:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": messages, "temperature": s.temperature,
                                "max_tokens": s.max_tokens, "seed": s.seed, "n": 1}
        body.update(dict(s.extra_body))
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    async def request(self, messages: list[dict[str, Any]]) -> Outcome:
        """Send with retries; every failure is an `Outcome` with a reason."""
        s = self.settings
        payload = self.body(messages)
        last: Optional[_Failed] = None
        for attempt in range(s.max_retries + 1):
            left = self._left()
            if left is not None and left <= 0:
                return Outcome(None, RUN_TIMEOUT, _detail(last, "recaption.run_timeout_s ran out"), attempt)
            try:
                async with self._sem:
                    budget = s.timeout_s if left is None else min(s.timeout_s, self._left() or 0.0)
                    try:
                        text = await asyncio.wait_for(self._send(payload), timeout=max(budget, 0.001))
                    except asyncio.TimeoutError:
                        if budget < s.timeout_s:
                            return Outcome(None, RUN_TIMEOUT, _detail(last, "recaption.run_timeout_s ran out during "
                                                                       "a request"), attempt + 1)
                        raise _Failed(TIMEOUT, f"no reply within {s.timeout_s:g}s", True) from None
                return Outcome(text, OK, "", attempt + 1)
            except _Failed as e:
                last = e
                if not e.retryable or attempt == s.max_retries:
                    return Outcome(None, e.reason, e.detail[:_MAX_DETAIL], attempt + 1)
                delay = self._backoff(attempt, e.retry_after)
                left = self._left()
                if left is not None and delay >= left:
                    return Outcome(None, RUN_TIMEOUT, _detail(e, "recaption.run_timeout_s ran out before the retry"),
                                   attempt + 1)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns on its last attempt

    def _left(self) -> Optional[float]:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        s = self.settings
        delay = self._rng.uniform(0, min(s.max_backoff_s, s.backoff_s * 2 ** attempt))  # full jitter
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.max_backoff_s))
        return delay

    async def _send(self, payload: bytes) -> str:
        import httpx

        s = self.settings
        try:
            async with self._http.stream("POST", s.url, content=payload) as resp:
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > s.max_response_bytes:
                        raise _Failed(RESPONSE_TOO_LARGE, f"body over {s.max_response_bytes} bytes (status "
                                      f"{resp.status_code})", False)
                    chunks.append(chunk)
                raw = b"".join(chunks)
                status, headers = resp.status_code, resp.headers
        except httpx.TimeoutException as e:
            raise _Failed(TIMEOUT, f"{type(e).__name__} after {s.timeout_s:g}s", True) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise _Failed(UNREACHABLE, f"{type(e).__name__}: {e}", True) from None
        except httpx.TransportError as e:
            raise _Failed(UNREACHABLE, f"{type(e).__name__}: {e}", True) from None
        if status != 200:
            snippet = raw[:120].decode("utf-8", "replace").strip()
            reason = RATE_LIMITED if status == 429 else HTTP_ERROR
            raise _Failed(reason, f"http_{status}" + (f": {snippet}" if snippet else ""), status in _RETRY_STATUS,
                          retry_after(headers.get("retry-after")))
        return parse_completion(raw)


def parse_completion(raw: bytes) -> str:
    """The first choice's text of a chat-completion body; `_Failed` (malformed or truncated) otherwise."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Failed(MALFORMED_RESPONSE, f"not JSON: {raw[:60].decode('utf-8', 'replace')!r}", False) from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Failed(MALFORMED_RESPONSE, "no choices", False)
    choice = min(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts in a reply: their text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise _Failed(MALFORMED_RESPONSE, f"message content is {type(content).__name__}", False)
    if choice.get("finish_reason") == "length":
        raise _Failed(TRUNCATED, f"cut at max_tokens after {len(content)} characters", False)
    return content


def _detail(last: Optional[_Failed], what: str) -> str:
    return what + (f" (last attempt: {last.reason}: {last.detail})" if last is not None else "")


def preflight(base_url: str, model: str, api_key: Optional[str] = None, timeout_s: float = 10.0) -> Optional[str]:
    """None when ``GET <root>/v1/models`` answers and lists `model`; else one line saying what is wrong."""
    import httpx

    url = api_root(base_url) + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as e:
        return f"endpoint {url} unreachable ({type(e).__name__}: {e})"
    if resp.status_code != 200:
        return f"endpoint {url} answered HTTP {resp.status_code}"
    try:
        served = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return f"endpoint {url} did not answer a model list"
    if model not in served:
        return f"model {model!r} is not served at {url} (served: {', '.join(map(str, served)) or 'none'})"
    return None


# --- the checks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checks:
    min_words: int = 8
    max_words: int = 400
    lang: Optional[str] = None  # required language; None: the original's
    entities: bool = True
    numbers: bool = True


_REFUSAL = re.compile(
    r"^\W*(?:i['’]?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:not|['’]t)\b|i am (?:not able|unable)|"
    r"i['’]m (?:not able|unable)|unfortunately,? i\b|as an ai\b)|\bas an ai (?:language )?model\b|"
    r"^\W*(?:抱歉|很抱歉|对不起|我无法|我不能|作为一?个?(?:AI|人工智能))",
    re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"^\W*(?:(?:the|this) (?:image|picture|photo(?:graph)?|scene) (?:shows|depicts|features|displays|presents|"
    r"captures|contains|is of|showcases|illustrates)\b|in (?:the|this) (?:image|picture|photo(?:graph)?)\b|"
    r"here is (?:a|the) (?:\w+ )?(?:caption|description)\b|caption\s*:|"
    r"(?:这张|该|此|这幅)?(?:图片|图像|照片|画面)(?:中|里)?(?:显示|展示|描绘|呈现)(?:了)?)",
    re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_QUOTED = re.compile(r"\"([^\"]{2,200})\"|“([^”]{2,200})”|「([^」]{1,200})」|『([^』]{1,200})』|《([^》]{1,200})》")
_CAP_WORD = r"(?:[A-Z][\w'’&.-]*|[a-z]+[A-Z][\w'’-]*|\d+[A-Za-z][\w-]*)"
_ENTITY = re.compile(rf"{_CAP_WORD}(?:\s+(?:of|the|de|la|von|van|and|&)?\s*{_CAP_WORD})*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)$")
_SMALL = {str(i): w for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ZH_DIGITS = {str(i): w for i, w in enumerate("零一二三四五六七八九十")}
_ZH_DIGITS["2"] += "两"


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def numbers_of(text: str) -> list[str]:
    """The numbers of a text, thousands separators removed ("1,200" -> "1200")."""
    out = []
    for m in _NUMBER.findall(unicodedata.normalize("NFKC", text)):
        n = re.sub(r"(?<=\d),(?=\d{3}\b)", "", m)
        if n not in out:
            out.append(n)
    return out


def entities_of(text: str, lang: Optional[str] = None) -> list[str]:
    """Named entities of a caption, by surface form: capitalised word runs ("Eiffel Tower", "iPhone 15"),
    except one capitalised word opening a sentence, quoted text or titles (“...”, 「...」, 《...》), and, in a
    Chinese caption (`lang` "zh", or detected when not given), the Chinese names `chinese_entities` finds."""
    text = unicodedata.normalize("NFKC", text)
    found: list[str] = []
    for m in _QUOTED.finditer(text):
        found.append(next(g for g in m.groups() if g))
    for m in _ENTITY.finditer(text):
        span = m.group(0).strip(" .-'’&")
        if not span:
            continue
        if " " not in span and _SENTENCE_START.search(text[: m.start()]) and span[1:].islower():
            continue  # "A photo of ...": a sentence's first word, not a name
        if span.lower() in {"i", "a", "an", "the"}:
            continue
        found.append(span)
    if _HAN.search(text) and (lang or detect_lang(text)) == "zh":
        found.extend(chinese_entities(text))
    out: list[str] = []
    for e in found:
        if e not in out:
            out.append(e)
    return out


# --- Chinese names: jieba's part-of-speech tags ---------------------------------------------------------------
#
# jieba (pure Python; its dictionary and HMM tagging model ship inside the wheel, nothing is downloaded) segments a
# Chinese text and tags each word with the People's Daily (ICTCLAS) tag set; a name is a word of two or more
# characters tagged nr (person; nrt, nrfg: its subtypes), ns (place), nt (organisation) or nz (other proper noun).
# The tags come from jieba's dictionary, one tag per word, and are noisy both ways: 贝壳, 柳树, 蓝天 and 热咖啡 are
# nr there, 城市, 海滩 and 新鲜 ns, 沙发 and 竹林 nz; 故宫, 天坛 and 外滩 are n (common noun). Three corrections:
# - a plain `nr` word counts as a person's name only with 2 or 3 characters, the first one of the common
#   surnames below (a Chinese name is a surname and one or two characters); this drops 热咖啡, 贝壳, 柳树, 蓝天;
# - `_ZH_COMMON`: common nouns tagged as names among the 186 Chinese entries of the shipped concept vocabulary
#   (operators/data/vocabulary.txt, common visual concepts: 23 came out as names, 长城 rightly) and a few more;
# - `_ZH_NAMES`: famous places jieba tags n.
# Measured on 24 everyday captions without names and 16 with 26 names (tests/operators/test_recaption.py):
# the raw tags give 10 of the 24 a false name, find 23 of the 26 and 3 false ones beside them; with the
# corrections 3 of 24 (金黄, 新鲜, 竹林), 25 of 26 (兵马俑 sits inside the one dictionary word 兵马俑博物馆), none
# false. A false name costs at most a
# recaption that paraphrased a common word (a `dropped_entity` reject); a missed one lets a dropped name through.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_ZH_NAME_TAGS = ("nr", "ns", "nt", "nz")
_ZH_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟"
    "谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤鲁")
_ZH_COMMON = frozenset(
    "小狗 熊猫 老虎 老鹰 乌龟 郁金香 雪山 沙滩 高山 大海 海滩 城市 城堡 西瓜 汉堡 吉他 彩虹 摩托车 沙发 "
    "公共汽车 新手机 金字塔".split())
_ZH_NAMES = frozenset("故宫 天坛 外滩 圆明园 兵马俑 苹果公司".split())
_jieba_lock = threading.Lock()
_jieba_tagger = None


def _zh_tagger():
    """jieba's POS tokenizer over a private `jieba.Tokenizer` (no global state touched), built on first use:
    ~1 s to read the dictionary (jieba caches it under the temp directory), and quiet (its logger at WARNING)."""
    global _jieba_tagger
    if _jieba_tagger is None:
        with _jieba_lock:
            if _jieba_tagger is None:
                import logging

                try:
                    import jieba
                    import jieba.posseg
                except ImportError as e:
                    raise ImportError("the recaption entity check of Chinese captions needs jieba: "
                                      "pip install 'quarry[caption]'") from e
                jieba.setLogLevel(logging.WARNING)  # it logs the dictionary load to stderr at DEBUG
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _jieba_tagger = jieba.posseg.POSTokenizer(tokenizer)
    return _jieba_tagger


def chinese_entities(text: str) -> list[str]:
    """The Chinese names of `text` (person, place, organisation, other proper noun), in order of first
    appearance: jieba's POS tags nr/ns/nt/nz on words of 2+ characters, corrected as described above."""
    out: list[str] = []
    for pair in _zh_tagger().lcut(text):
        word, flag = pair.word, pair.flag
        if len(word) < 2 or not _HAN.search(word) or word in _ZH_COMMON:
            continue
        if flag == "nr" and not (len(word) <= 3 and word[0] in _ZH_SURNAMES):
            continue  # jieba tags many common nouns nr; a Chinese person's name is a surname and 1-2 characters
        if (flag.startswith(_ZH_NAME_TAGS) or word in _ZH_NAMES) and word not in out:
            out.append(word)
    return out


def _has_number(n: str, recaption_numbers: set[str], norm_recaption: str) -> bool:
    if n in recaption_numbers:
        return True
    word = _SMALL.get(n)
    if word and re.search(rf"\b{word}\b", norm_recaption):
        return True
    zh = _ZH_DIGITS.get(n)
    return bool(zh) and any(ch in norm_recaption for ch in zh)


def _has_entity(entity: str, norm_recaption: str) -> bool:
    e = _norm(entity)
    if e in norm_recaption:
        return True
    words = [w for w in re.findall(r"\w+", e) if w not in {"of", "the", "de", "la", "von", "van", "and"}]
    return bool(words) and all(re.search(rf"(?<!\w){re.escape(w)}", norm_recaption) for w in words)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|\w+", _norm(text))


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)}


def echoes_prompt(recaption: str, template: str, n: int = 5, share: float = 0.2) -> bool:
    """The reply repeats the instructions: at least `share` (and 3) of the template's word n-grams (the
    caption placeholder left out, so quoting the caption is no echo) are in it."""
    instruction = _ngrams(_tokens(template.replace("{caption}", " ").replace("{language}", " ")), n)
    if not instruction:
        return False
    hits = len(instruction & _ngrams(_tokens(recaption), n))
    return hits >= max(3, share * len(instruction))


def _similar(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def ocr_contradiction(recaption: str, original: str, ocr_texts: Sequence[str], min_ratio: float = 0.75) -> Optional[str]:
    """Quoted text in the recaption (the prompt asks for legible text verbatim, in quotes) that neither the OCR
    lines nor the original caption hold: the first such quote, or None. No OCR text: nothing to contradict."""
    lines = [_alnum(t) for t in ocr_texts if len(_alnum(t)) >= 2]
    if not lines:
        return None
    joined, orig = " ".join(lines), _alnum(original)
    for m in _QUOTED.finditer(unicodedata.normalize("NFKC", recaption)):
        quote = _alnum(next(g for g in m.groups() if g))
        if len(quote) < 2 or quote in joined or quote in orig:
            continue
        if any(_similar(quote, line) >= min_ratio for line in lines):
            continue
        if len(quote) < len(joined) and _best_window(quote, joined) >= min_ratio:
            continue
        return next(g for g in m.groups() if g)
    return None


def _alnum(text: str) -> str:
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def _best_window(quote: str, text: str) -> float:
    width, best = len(quote), 0.0
    for i in range(0, max(1, len(text) - width + 1), max(1, width // 4)):
        best = max(best, _similar(quote, text[i: i + width]))
    return best


_CJK_LANGS = ("zh", "ja", "ko")
_NEAR = 3  # languages of py3langid's ranking that count as "could be this one"


def _top_languages(text: str) -> list[str]:
    from py3langid import langid

    return [lang for lang, _ in langid.rank(text)[:_NEAR]]


def _language_check(original: str, recaption: str, lang: Optional[str],
                    original_lang: Optional[str] = None) -> Optional[Rejection]:
    """The recaption must be in `lang`, or else in the original's language (operators/lang.py).

    Languages written in CJK scripts are decided by script and must match exactly. Between other languages,
    py3langid's top choice for a short caption is often a neighbour ("a shop front" is Nigerian Pidgin, with
    English second), so the two count as the same language when either's top choice is among the other's
    top three (an English caption and a French recaption are not)."""
    got = detect_lang(recaption)
    if lang is not None:
        return None if got == lang else Rejection(WRONG_LANGUAGE, f"recaption is {got}, recaption.lang {lang}")
    want = original_lang or detect_lang(original)
    if want == UNDETERMINED or got == want:
        return None
    if want not in _CJK_LANGS and got not in _CJK_LANGS and (
            got in _top_languages(original) or want in _top_languages(recaption)):
        return None
    return Rejection(WRONG_LANGUAGE, f"recaption is {got}, the original {want}")


def check_recaption(original: str, recaption: str, template: str, checks: Checks,
                    ocr_texts: Optional[Sequence[str]] = None, original_lang: Optional[str] = None) -> Optional[Rejection]:
    """None when the recaption may be used; otherwise the first failed check's `Rejection`.

    In order: empty, the prompt echoed, a refusal, a boilerplate opening, length (words, each CJK character
    one, as in the heuristics stage), language (operators/lang.py), numbers and named entities of the original
    that it drops, and (with `ocr_texts`) quoted text the image does not show. `original_lang`: the
    original's `detect_lang`, where the caller has it already.
    """
    text = recaption.strip()
    if not text:
        return Rejection(EMPTY, "the reply was empty")
    if echoes_prompt(text, template):
        return Rejection(PROMPT_ECHO, f"the reply repeats the prompt: {text[:80]!r}")
    if _REFUSAL.search(text[:200]):
        return Rejection(REFUSAL, text[:_MAX_DETAIL])
    if _BOILERPLATE.search(text[:80]):
        return Rejection(BOILERPLATE, f"opens with {text[:40]!r}")
    words = caption_stats(text).words
    if words < checks.min_words:
        return Rejection(TOO_SHORT, f"{words} words < min_words {checks.min_words}")
    if words > checks.max_words:
        return Rejection(TOO_LONG, f"{words} words > max_words {checks.max_words}")
    verdict = _language_check(original, text, checks.lang, original_lang)
    if verdict is not None:
        return verdict
    norm = _norm(text)
    if checks.numbers:
        have = set(numbers_of(text))
        missing = [n for n in numbers_of(original) if not _has_number(n, have, norm)]
        if missing:
            return Rejection(DROPPED_NUMBER, f"the original's {', '.join(missing[:5])} not in the recaption")
    if checks.entities:
        missing = [e for e in entities_of(original, original_lang) if not _has_entity(e, norm)]
        if missing:
            return Rejection(DROPPED_ENTITY, f"the original's {', '.join(repr(e) for e in missing[:5])} "
                                             "not in the recaption")
    if ocr_texts is not None:
        quote = ocr_contradiction(text, original, ocr_texts)
        if quote is not None:
            return Rejection(OCR_CONTRADICTION, f"quotes {quote!r}; OCR read {', '.join(map(repr, ocr_texts[:5]))}")
    return None


def train_on_recaption(sample_id: str, merge_ratio: float, seed: int) -> bool:
    """Whether a row's training caption is its recaption: a hash of (seed, id) below `merge_ratio`."""
    from quarry.operators.ids import seeded_uniform

    return seeded_uniform("recaption-merge", str(seed), sample_id) < merge_ratio


__all__ = ["REASONS", "TRANSPORT_REASONS", "CHECK_REASONS", "OK", "Checks", "ClientSettings", "Outcome",
           "RecaptionClient", "PromptError", "check_recaption", "entities_of", "chinese_entities", "numbers_of", "load_prompt",
           "messages_for", "render_prompt", "preflight", "train_on_recaption", "api_root", "chat_url",
           "parse_completion", "ocr_contradiction", "echoes_prompt"]
