"""Rollouts for `grade`: k model responses per question, from an OpenAI-compatible endpoint.

`generate_rollouts(samples, config, k)` yields ``(sample_id, model, response,
error)`` tuples, k per sample, in sample order; exactly one of ``response``
and ``error`` is None. A failed request is k error rows, never an exception.
The prompt asks for GLM-4.5V's response format: reasoning inside
``<think>...</think>``, the final answer inside
``<|begin_of_box|>...<|end_of_box|>``, which is what `verify.extract_answer`
reads.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional

from quarry.operators.chat_client import ChatClient, ChatClientConfig, user_message
from quarry.operators.grade.verify import BOX_BEGIN, BOX_END

RESPONSE_FORMAT = (
    "Think step by step inside <think>...</think>, then give the final answer "
    f"inside {BOX_BEGIN}...{BOX_END}, with nothing but the answer in the box."
)

Rollout = tuple[str, str, Optional[str], Optional[str]]


def rollout_messages(question: str, image: Optional[bytes | str] = None) -> list[dict[str, Any]]:
    """The conversation for one question (+ optional image bytes or URL)."""
    return [user_message(f"{question}\n\n{RESPONSE_FORMAT}", image)]


def _field(sample: Any, *names: str) -> Any:
    for name in names:
        if isinstance(sample, Mapping):
            if name in sample:
                return sample[name]
        elif hasattr(sample, name):
            return getattr(sample, name)
    return None


def generate_rollouts(
    samples: Iterable[Any],
    client_config: ChatClientConfig | ChatClient,
    k: int,
    *,
    use_n: bool = True,
    chunk_size: Optional[int] = None,
) -> Iterator[Rollout]:
    """k rollouts per sample: ``(sample_id, model, response | None, error | None)``.

    A sample is a mapping or an object with ``sample_id`` (or ``id``),
    ``question`` and optionally ``image`` (encoded bytes or a URL). With
    ``use_n`` one request asks for ``n=k`` choices (vLLM and SGLang support
    it); otherwise k requests of ``n=1`` each. Samples are read lazily, in
    chunks of ``chunk_size`` (default 4 x ``max_concurrency``), so an
    unbounded iterable streams.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    client = client_config if isinstance(client_config, ChatClient) else ChatClient(client_config)
    model = client.config.model
    chunk_size = chunk_size or 4 * client.config.max_concurrency
    it = iter(samples)
    while True:
        chunk = list(itertools.islice(it, chunk_size))
        if not chunk:
            return
        ids, conversations = [], []
        for sample in chunk:
            sample_id = _field(sample, "sample_id", "id")
            question = _field(sample, "question")
            if sample_id is None or not isinstance(question, str):
                raise ValueError(f"sample needs an id and a question string: {sample!r:.200}")
            ids.append(str(sample_id))
            conversations.append(rollout_messages(question, _field(sample, "image")))
        if use_n:
            results = client.complete_many(conversations, n=k)
            for sample_id, result in zip(ids, results):
                texts = result.texts or []
                for j in range(k):
                    if result.error is not None:
                        yield (sample_id, model, None, result.error)
                    elif j < len(texts):
                        yield (sample_id, model, texts[j], None)
                    else:
                        yield (sample_id, model, None, f"bad_response: {len(texts)} choices for n={k}")
        else:
            repeated = [c for c in conversations for _ in range(k)]
            results = client.complete_many(repeated, n=1)
            for idx, result in enumerate(results):
                sample_id = ids[idx // k]
                if result.error is not None or not result.texts:
                    yield (sample_id, model, None, result.error or "bad_response: no choices")
                else:
                    yield (sample_id, model, result.texts[0], None)


def with_model(config: ChatClientConfig, model: str) -> ChatClientConfig:
    """The same endpoint settings for another served model."""
    return dataclasses.replace(config, model=model)
