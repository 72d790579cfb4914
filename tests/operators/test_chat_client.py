"""ChatClient against a real local HTTP server that mimics /v1/chat/completions."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import pickle
import threading
import time

import pytest

from quarry.operators.chat_client import (
    ChatClient,
    ChatClientConfig,
    ChatError,
    Result,
    image_mime,
    retry_after,
    user_message,
)
from quarry.operators.grade.rollouts import RESPONSE_FORMAT, generate_rollouts

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16


def completion(texts: list[str], **message_extra) -> dict:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t, **message_extra}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
    }


@pytest.fixture
def serve(chat_server):
    return chat_server


def echo(server, body, n_seen):
    """n choices echoing the last user text."""
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]
    return 200, completion([f"{text}#{i}" for i in range(body.get("n", 1))]), None


def cfg(base_url: str, **kw) -> ChatClientConfig:
    defaults = dict(model="m", api_key_env=None, timeout_s=2.0, max_retries=2, backoff_s=0.01, max_backoff_s=0.05)
    defaults.update(kw)
    return ChatClientConfig(base_url=base_url, **defaults)


# --- normal replies ----------------------------------------------------------


def test_complete_sends_openai_body_and_reads_reply(serve):
    s = serve(echo)
    client = ChatClient(cfg(s.base_url, temperature=0.7, max_tokens=64, extra_body={"top_p": 0.9}))
    assert client.complete([user_message("hi")]) == ["hi#0"]
    (req,) = s.requests
    assert req["path"] == "/v1/chat/completions"
    body = json.loads(req["raw"])
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "n": 1,
        "max_tokens": 64,
        "top_p": 0.9,
    }
    assert "Authorization" not in req["headers"]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
def test_base_url_forms(serve, suffix):
    s = serve(echo)
    ChatClient(cfg(s.base_url + suffix)).complete([user_message("x")])
    assert s.requests[0]["path"] == "/v1/chat/completions"


def test_n_choices_in_index_order(serve):
    def shuffled(server, body, n_seen):
        reply = completion(["a", "b", "c"])
        reply["choices"].reverse()
        return 200, reply, None

    s = serve(shuffled)
    assert ChatClient(cfg(s.base_url, n=3)).complete([user_message("q")]) == ["a", "b", "c"]
    assert s.bodies()[0]["n"] == 3


def test_overrides_per_call(serve):
    s = serve(echo)
    assert ChatClient(cfg(s.base_url)).complete([user_message("q")], n=2) == ["q#0", "q#1"]


def test_reasoning_content_is_put_back_as_think(serve):
    s = serve(lambda *a: (200, completion(["<|begin_of_box|>4<|end_of_box|>"], reasoning_content="2+2"), None))
    assert ChatClient(cfg(s.base_url)).complete([user_message("q")]) == [
        "<think>2+2</think><|begin_of_box|>4<|end_of_box|>"
    ]
    assert ChatClient(cfg(s.base_url, include_reasoning=False)).complete([user_message("q")]) == [
        "<|begin_of_box|>4<|end_of_box|>"
    ]


def test_complete_many_keeps_order(serve):
    s = serve(echo)
    results = ChatClient(cfg(s.base_url, max_concurrency=4)).complete_many(
        [[user_message(str(i))] for i in range(10)]
    )
    assert results == [Result([f"{i}#0"]) for i in range(10)]
    assert all(r.ok for r in results)
    assert ChatClient(cfg(s.base_url)).complete_many([]) == []


# --- retries and failures ------------------------------------------------------


def test_500_then_success_is_retried(serve):
    s = serve(lambda srv, body, n: (500, {"error": "boom"}, None) if n == 1 else echo(srv, body, n))
    assert ChatClient(cfg(s.base_url)).complete([user_message("q")]) == ["q#0"]
    assert len(s.requests) == 2


def test_always_500_is_an_error_result_after_retries(serve):
    s = serve(lambda *a: (500, {"error": "boom"}, None))
    client = ChatClient(cfg(s.base_url, max_retries=2))
    (result,) = client.complete_many([[user_message("q")]])
    assert result.texts is None
    assert result.error.startswith("http_500")
    assert not result.ok
    assert len(s.requests) == 3  # one try + two retries
    with pytest.raises(ChatError, match="http_500"):
        client.complete([user_message("q")])


def test_429_is_retried_and_honours_retry_after(serve):
    s = serve(lambda srv, body, n: (429, {"error": "slow down"}, {"Retry-After": "0.2"}) if n == 1 else echo(srv, body, n))
    t0 = time.monotonic()
    assert ChatClient(cfg(s.base_url, max_backoff_s=1.0)).complete([user_message("q")]) == ["q#0"]
    assert time.monotonic() - t0 >= 0.2
    assert len(s.requests) == 2


def test_429_forever_is_an_error(serve):
    s = serve(lambda *a: (429, {"error": "slow down"}, None))
    (result,) = ChatClient(cfg(s.base_url, max_retries=1)).complete_many([[user_message("q")]])
    assert result.error.startswith("http_429")
    assert len(s.requests) == 2


def test_400_is_not_retried(serve):
    s = serve(lambda *a: (400, {"error": "bad model"}, None))
    (result,) = ChatClient(cfg(s.base_url)).complete_many([[user_message("q")]])
    assert result.error.startswith("http_400") and "bad model" in result.error
    assert len(s.requests) == 1


def test_timeout_is_an_error_within_bounded_time(serve):
    def slow(server, body, n):
        server.release.wait(5)
        return echo(server, body, n)

    s = serve(slow)
    client = ChatClient(cfg(s.base_url, timeout_s=0.3, max_retries=1))
    t0 = time.monotonic()
    results = client.complete_many([[user_message("a")], [user_message("b")]])
    elapsed = time.monotonic() - t0
    assert [r.error for r in results] == ["timeout", "timeout"]
    assert all(r.texts is None for r in results)
    assert elapsed < 2.0  # 2 attempts x 0.3 s + tiny backoff, run in parallel


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"", b'{"choices": []}', b'{"choices": [{"index": 0}]}', b"[1, 2]", b'{"choices": [{"message": {"content": 3}}]}'],
)
def test_malformed_body_is_an_error_not_retried(serve, payload):
    s = serve(lambda *a: (200, payload, None))
    (result,) = ChatClient(cfg(s.base_url)).complete_many([[user_message("q")]])
    assert result.texts is None
    assert result.error.startswith("bad_response")
    assert len(s.requests) == 1


def test_connection_refused_is_an_error(serve):
    s = serve(echo)
    url = s.base_url
    s.close()
    t0 = time.monotonic()
    (result,) = ChatClient(cfg(url, max_retries=1)).complete_many([[user_message("q")]])
    assert result.error.startswith("connection")
    assert time.monotonic() - t0 < 2.0


def test_one_failure_does_not_spoil_the_batch(serve):
    def some_fail(server, body, n):
        if body["messages"][0]["content"] == "bad":
            return 500, {"error": "boom"}, None
        return echo(server, body, n)

    s = serve(some_fail)
    results = ChatClient(cfg(s.base_url, max_retries=0)).complete_many(
        [[user_message("a")], [user_message("bad")], [user_message("c")]]
    )
    assert [r.texts for r in results] == [["a#0"], None, ["c#0"]]
    assert results[1].error.startswith("http_500")


# --- concurrency -----------------------------------------------------------------


def test_concurrency_limit_is_respected(serve):
    def slowish(server, body, n):
        time.sleep(0.15)
        return echo(server, body, n)

    s = serve(slowish)
    client = ChatClient(cfg(s.base_url, max_concurrency=3))
    results = client.complete_many([[user_message(str(i))] for i in range(12)])
    assert all(r.ok for r in results)
    assert s.max_in_flight == 3

    # The limit holds across callers sharing one client.
    s.max_in_flight = 0
    threads = [
        threading.Thread(target=client.complete_many, args=([[user_message("x")]] * 4,)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.max_in_flight <= 3


# --- images and auth -----------------------------------------------------------------


def test_image_content_part_is_serialised(serve):
    s = serve(echo)
    assert ChatClient(cfg(s.base_url)).complete([user_message("what is this?", PNG)]) == ["what is this?#0"]
    (message,) = s.bodies()[0]["messages"]
    assert message == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
            {"type": "text", "text": "what is this?"},
        ],
    }


def test_user_message_forms():
    assert user_message("t") == {"role": "user", "content": "t"}
    assert user_message("t", []) == {"role": "user", "content": "t"}
    two = user_message("t", [PNG, JPEG])["content"]
    assert [p["type"] for p in two] == ["image_url", "image_url", "text"]
    assert two[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    url = user_message("t", "https://example.com/a.png")["content"][0]
    assert url == {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert image_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_mime(b"GIF89a...") == "image/gif"


def test_api_key_sent_as_bearer_and_never_logged(serve, monkeypatch, caplog):
    secret = "sk-test-very-secret"
    monkeypatch.setenv("QUARRY_TEST_KEY", secret)
    calls = []

    def fail_once(server, body, n):
        calls.append(n)
        return (500, {"error": "boom"}, None) if n == 1 else echo(server, body, n)

    s = serve(fail_once)
    config = cfg(s.base_url, api_key_env="QUARRY_TEST_KEY")
    client = ChatClient(config)
    with caplog.at_level(logging.DEBUG):
        client.complete([user_message("q")])
    assert all(r["headers"]["Authorization"] == f"Bearer {secret}" for r in s.requests)
    assert caplog.records  # the retry was logged ...
    assert secret not in caplog.text  # ... without the key
    assert secret not in repr(config) and secret not in repr(client)
    assert secret not in pickle.dumps(client).decode("latin-1")


def test_unset_key_env_sends_no_authorization(serve, monkeypatch):
    monkeypatch.delenv("QUARRY_TEST_KEY", raising=False)
    s = serve(echo)
    ChatClient(cfg(s.base_url, api_key_env="QUARRY_TEST_KEY")).complete([user_message("q")])
    assert "Authorization" not in s.requests[0]["headers"]


def test_client_pickles(serve):
    s = serve(echo)
    client = pickle.loads(pickle.dumps(ChatClient(cfg(s.base_url))))
    assert client.complete([user_message("q")]) == ["q#0"]


@pytest.mark.parametrize(
    "bad", [dict(timeout_s=0), dict(max_retries=-1), dict(max_concurrency=0), dict(n=0), dict(model="")]
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        cfg("http://127.0.0.1:1", **bad)


# --- rollouts ----------------------------------------------------------------------


def test_generate_rollouts_with_n(serve):
    s = serve(echo)
    samples = [{"sample_id": "a", "question": "2+2?"}, {"id": "b", "question": "color?", "image": PNG}]
    rows = list(generate_rollouts(samples, cfg(s.base_url, model="glm"), k=3))
    assert [(r[0], r[1]) for r in rows] == [("a", "glm")] * 3 + [("b", "glm")] * 3
    assert all(r[3] is None for r in rows)
    assert rows[0][2].startswith("2+2?") and rows[2][2].endswith("#2")
    bodies = s.bodies()  # requests run concurrently: the arrival order is not fixed
    assert [b["n"] for b in bodies] == [3, 3]
    text_msg = next(b for b in bodies if isinstance(b["messages"][0]["content"], str))["messages"][0]["content"]
    assert text_msg.startswith("2+2?") and RESPONSE_FORMAT in text_msg
    assert "<|begin_of_box|>" in RESPONSE_FORMAT and "<think>" in RESPONSE_FORMAT
    image_msg = next(b for b in bodies if isinstance(b["messages"][0]["content"], list))["messages"][0]["content"]
    assert image_msg[0]["type"] == "image_url" and image_msg[1]["text"].startswith("color?")


def test_generate_rollouts_without_n_and_errors(serve):
    def fail_b(server, body, n):
        content = body["messages"][0]["content"]
        if content.startswith("b"):
            return 500, {"error": "boom"}, None
        return echo(server, body, n)

    s = serve(fail_b)
    samples = iter([{"id": "a", "question": "a?"}, {"id": "b", "question": "b?"}, {"id": "c", "question": "c?"}])
    rows = list(generate_rollouts(samples, cfg(s.base_url, max_retries=0), k=2, use_n=False, chunk_size=2))
    assert [r[0] for r in rows] == ["a", "a", "b", "b", "c", "c"]
    assert [r[2] is None for r in rows] == [False, False, True, True, False, False]
    assert rows[2][3].startswith("http_500")
    assert all(b["n"] == 1 for b in s.bodies())


def test_generate_rollouts_short_choices(serve):
    s = serve(lambda *a: (200, completion(["only one"]), None))
    rows = list(generate_rollouts([{"id": "a", "question": "q"}], cfg(s.base_url), k=2))
    assert rows[0] == ("a", "m", "only one", None)
    assert rows[1][2] is None and rows[1][3].startswith("bad_response")


NOW = 1_790_000_000.0  # a fixed clock for the date forms


@pytest.mark.parametrize("value, seconds", [
    (None, None), ("", None), ("  ", None), ("soon", None), ("nan", None), ("inf", None),
    ("3", 3.0), (" 2.5 ", 2.5), ("0", 0.0), ("-4", 0.0),
    (email.utils.formatdate(NOW + 10, usegmt=True), 10.0),  # IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    (email.utils.formatdate(NOW + 90, usegmt=True).replace("GMT", "-0000"), 90.0),  # naive: taken as GMT
    (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),  # a date in the past: retry now
    ("Sun, 32 Nov 1994 08:49:37 GMT", None),
])
def test_retry_after_reads_seconds_and_http_dates(value, seconds):
    assert retry_after(value, now=NOW) == seconds


def test_429_with_an_http_date_waits_for_it(serve):
    """A 429 whose Retry-After is an HTTP date (whole seconds) ~2 s ahead: the retry waits for it (the old
    parser ignored dates and fell back to the computed backoff)."""
    def behave(srv, body, n):
        if n == 1:
            return 429, {"error": "slow down"}, {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}
        return echo(srv, body, n)

    s = serve(behave)
    t0 = time.monotonic()
    assert ChatClient(cfg(s.base_url, max_backoff_s=5.0)).complete([user_message("q")]) == ["q#0"]
    assert time.monotonic() - t0 >= 0.9
    assert len(s.requests) == 2
