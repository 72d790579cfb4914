"""A small client for the OpenAI-compatible ``/v1/chat/completions`` endpoint.

vLLM and SGLang both serve this API; quarry uses it for everything that calls a
hosted model (judging, rollouts, recaptioning). Standard library only
(`urllib.request` + a thread pool), so it adds no dependency.

- `ChatClientConfig`: endpoint, model, sampling and retry settings. The API
  key is never stored: the config names the environment variable that holds
  it, and the key is read when a request is sent. It is never logged and never
  put in an error message.
- `ChatClient.complete(messages) -> list[str]`: one request, one text per
  choice (``n`` of them); raises `ChatError` when it fails after retries.
- `ChatClient.complete_many(list_of_messages) -> list[Result]`: many
  requests with at most ``max_concurrency`` in flight; a failure is data
  (``Result(None, "http_500: ...")``), never an exception or a hang.
- `user_message(text, images)`: a user message with images as OpenAI
  ``image_url`` content parts (base64 ``data:`` URLs).

Retries: 408, 429, 5xx, connection errors and timeouts are retried up to
``max_retries`` times with exponential backoff and full jitter (a 429's
``Retry-After`` is honoured, capped at ``max_backoff_s``). Other 4xx and a
malformed 200 body are not retried.

Bounded time: ``timeout_s`` bounds connecting and each read of the socket, so
a server that never answers costs at most about
``(max_retries + 1) * timeout_s`` plus the backoff sleeps.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Union

log = logging.getLogger(__name__)

Message = dict[str, Any]
Messages = Sequence[Mapping[str, Any]]

_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
_MAX_ERROR_BODY = 300


@dataclass(frozen=True)
class ChatClientConfig:
    """Where and how to call a chat-completions endpoint.

    ``base_url`` may be the server root (``http://host:8000``), the API root
    (``http://host:8000/v1``) or the full endpoint URL. ``api_key_env`` names
    the environment variable holding the key (None or unset: no
    ``Authorization`` header; vLLM and SGLang need none by default).
    ``max_tokens`` None leaves the limit to the server. ``extra_body`` is
    merged into each request body (e.g. ``{"top_p": 0.95}``).
    """

    base_url: str
    model: str
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_concurrency: int = 8
    temperature: float = 0.0
    max_tokens: Optional[int] = 2048
    n: int = 1
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    # vLLM/SGLang reasoning parsers move the thinking out of ``content`` into
    # ``reasoning_content``; put it back as ``<think>...</think>`` so verifiers
    # see the whole response.
    include_reasoning: bool = True

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url is empty")
        if not self.model:
            raise ValueError("model is empty")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def url(self) -> str:
        """The full chat-completions URL."""
        base = self.base_url.rstrip("/")
        if base.endswith("/chat/completions"):
            return base
        if base.endswith("/v1"):
            return base + "/chat/completions"
        return base + "/v1/chat/completions"


@dataclass(frozen=True)
class Result:
    """One request's outcome: the choices' texts, or an error (exactly one is set)."""

    texts: Optional[list[str]]
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ChatError(RuntimeError):
    """A request failed (after retries where the failure was transient)."""


class _Attempt(Exception):
    """One attempt failed; ``retryable`` says whether another may succeed."""

    def __init__(self, message: str, retryable: bool, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


# --------------------------------------------------------------------------- messages

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic number (PNG if unknown)."""
    for magic, mime in _IMAGE_MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def image_part(image: Union[bytes, str], mime: Optional[str] = None) -> Message:
    """An ``image_url`` content part: bytes become a base64 ``data:`` URL, a str is used as is."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        url = f"data:{mime or image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
    elif isinstance(image, str):
        url = image
    else:
        raise TypeError(f"image must be bytes or a URL string, got {type(image).__name__}")
    return {"type": "image_url", "image_url": {"url": url}}


def user_message(
    text: str,
    images: Union[None, bytes, str, Sequence[Union[bytes, str]]] = None,
    *,
    mime: Optional[str] = None,
) -> Message:
    """A user message: plain ``content`` for text only, else image parts then a text part."""
    if images is None:
        return {"role": "user", "content": text}
    if isinstance(images, (bytes, bytearray, memoryview, str)):
        images = [images]
    parts = [image_part(im, mime) for im in images]
    if not parts:
        return {"role": "user", "content": text}
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


# --------------------------------------------------------------------------- client


class ChatClient:
    """Thread-safe client; at most ``max_concurrency`` requests in flight across all callers."""

    def __init__(self, config: ChatClientConfig, *, rng: Optional[random.Random] = None):
        self.config = config
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    # Picklable (Beam ships operators to workers): locks are rebuilt on load.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ChatClient(url={self.config.url!r}, model={self.config.model!r})"

    # -- public

    def complete(self, messages: Messages, **overrides: Any) -> list[str]:
        """The texts of one request's choices; `ChatError` if it fails after retries.

        ``overrides`` replace body fields for this request (``n``,
        ``temperature``, ``max_tokens``, ...).
        """
        result = self._run(messages, overrides)
        if result.error is not None:
            raise ChatError(result.error)
        assert result.texts is not None
        return result.texts

    def complete_many(self, conversations: Iterable[Messages], **overrides: Any) -> list[Result]:
        """One `Result` per conversation, in order, with bounded concurrency; never raises on failures."""
        conversations = list(conversations)
        if not conversations:
            return []
        workers = min(self.config.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat") as pool:
            return list(pool.map(lambda m: self._run(m, overrides), conversations))

    # -- internals

    def _body(self, messages: Messages, overrides: Mapping[str, Any]) -> bytes:
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": [dict(m) for m in messages],
            "temperature": cfg.temperature,
            "n": cfg.n,
        }
        if cfg.max_tokens is not None:
            body["max_tokens"] = cfg.max_tokens
        body.update(cfg.extra_body)
        body.update(overrides)
        return json.dumps(body).encode("utf-8")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        env = self.config.api_key_env
        key = os.environ.get(env) if env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _run(self, messages: Messages, overrides: Mapping[str, Any]) -> Result:
        """Send with retries; every failure becomes an error `Result`."""
        try:
            body = self._body(messages, overrides)
        except (TypeError, ValueError) as e:
            return Result(None, f"bad_request: {e}")
        cfg = self.config
        last = "no_attempt"
        for attempt in range(cfg.max_retries + 1):
            try:
                with self._slots:
                    return Result(self._send_once(body))
            except _Attempt as e:
                last = str(e)
                if not e.retryable or attempt == cfg.max_retries:
                    break
                delay = self._backoff(attempt, e.retry_after)
                log.warning("chat request to %s failed (%s); retry %d/%d in %.2fs",
                            cfg.url, last, attempt + 1, cfg.max_retries, delay)
                time.sleep(delay)
            except Exception as e:  # noqa: BLE001 - a failure is data, whatever it is
                last = f"error: {type(e).__name__}: {e}"
                break
        return Result(None, last)

    def _backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        cfg = self.config
        cap = min(cfg.max_backoff_s, cfg.backoff_s * (2 ** attempt))
        with self._rng_lock:
            delay = self._rng.uniform(0, cap)  # full jitter
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.max_backoff_s))
        return delay

    def _send_once(self, body: bytes) -> list[str]:
        cfg = self.config
        req = urllib.request.Request(cfg.url, data=body, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read(_MAX_ERROR_BODY).decode("utf-8", "replace").strip()
            except Exception:  # noqa: BLE001
                detail = ""
            finally:
                e.close()
            wait = retry_after(e.headers.get("Retry-After") if e.headers else None)
            msg = f"http_{e.code}" + (f": {detail}" if detail else "")
            raise _Attempt(msg, e.code in _RETRY_STATUS, wait) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise _Attempt("timeout", True) from None
            raise _Attempt(f"connection: {reason}", True) from None
        except (socket.timeout, TimeoutError):
            raise _Attempt("timeout", True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Attempt(f"connection: {type(e).__name__}: {e}", True) from None
        return self._parse(raw)

    def _parse(self, raw: bytes) -> list[str]:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            snippet = raw[:80].decode("utf-8", "replace")
            raise _Attempt(f"bad_response: not JSON: {snippet!r}", False) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise _Attempt("bad_response: no choices", False)
        try:
            choices = sorted(choices, key=lambda c: c.get("index", 0))
            return [self._choice_text(c) for c in choices]
        except (AttributeError, TypeError, KeyError) as e:
            raise _Attempt(f"bad_response: malformed choice: {e}", False) from None

    def _choice_text(self, choice: Mapping[str, Any]) -> str:
        message = choice["message"]
        content = message.get("content")
        if isinstance(content, list):  # content parts in a reply: join the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TypeError(f"content is {type(content).__name__}")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if self.config.include_reasoning and isinstance(reasoning, str) and reasoning and "<think>" not in content:
            content = f"<think>{reasoning}</think>{content}"
        return content


def retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """A Retry-After header in seconds to wait (RFC 9110 §10.2.3: delay-seconds or an HTTP date, e.g.
    ``Wed, 21 Oct 2026 07:28:00 GMT``); None when absent or unreadable. Never negative: a date in the past
    is 0. `now` (Unix time; default: the clock) is what a date is counted from. Callers cap the wait."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; parsedate_to_datetime leaves "-0000" naive
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
