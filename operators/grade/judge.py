"""A model-judge verifier: a hosted model says whether an answer matches the reference.

Same call shape as the rule-based verifiers of `quarry.operators.grade.verify`:
``JudgeVerifier(config)(response, reference) -> Verdict``. The candidate answer
is extracted with ``extract_answer(response, require_box=False)`` (what follows
``</think>`` / inside ``<answer>``, the box when there is one), put in the
prompt of ``data/judge_prompt.txt`` with the reference (and the question when
given), and the judge must reply ``CORRECT`` or ``INCORRECT``.

Optional, like everything that calls a hosted model: nothing in quarry needs
it; the rule-based verifiers are the offline default.

Reasons: ``""`` (CORRECT, reward 1), ``"mismatch"`` (INCORRECT, reward 0),
``"judge_unparseable"`` (the reply is neither), ``"judge_error"`` (the endpoint
failed after retries), or an extraction reason (``multiple_boxes``,
``unbalanced_box``, ``no_box`` for an empty answer) without calling the judge.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from quarry.operators.chat_client import ChatClient, ChatClientConfig, Result, user_message
from quarry.operators.grade.verify import BOX_BEGIN, BOX_END, NO_BOX, RIGHT, WRONG, Verdict, extract_answer
from quarry.operators.inputs.opening import read_text

log = logging.getLogger(__name__)

JUDGE_ERROR = "judge_error"
JUDGE_UNPARSEABLE = "judge_unparseable"

_DEFAULT_PROMPT = "data/judge_prompt.txt"
_PLACEHOLDERS = ("{candidate}", "{reference}")
_NO_QUESTION = "(not given)"

# Wrappers a judge may put around its one word.
_PREFIX = re.compile(r"^(?:final\s+)?(?:verdict|answer|judgement|judgment|grade|result)\s*[:：]\s*", re.I)
_STRIP = " \t\r\n*_`'\"“”.!。:;#>-"
_BOXED = re.compile(r"^\\(?:boxed|fbox|text)\s*\{(.*)\}$", re.S)


def load_judge_prompt(path: Optional[Union[str, Path]] = None) -> str:
    """The prompt template (the shipped one when ``path`` is None).

    It must contain ``{candidate}`` and ``{reference}``; ``{question}`` is
    optional. Placeholders are replaced literally (no `str.format`), so braces
    in answers are safe.
    """
    if path is None:
        text = importlib.resources.files("quarry.operators").joinpath(_DEFAULT_PROMPT).read_text("utf-8")
    else:
        text = read_text(path)  # any Beam path: remote workers read a gs:// file
    missing = [p for p in _PLACEHOLDERS if p not in text]
    if missing:
        raise ValueError(f"judge prompt {path or _DEFAULT_PROMPT} lacks {', '.join(missing)}")
    return text


def _normalise_label(text: str) -> str:
    text = text.replace(BOX_BEGIN, "").replace(BOX_END, "").strip(_STRIP)
    m = _BOXED.match(text)
    if m:
        text = m.group(1)
    text = _PREFIX.sub("", text.strip(_STRIP)).strip(_STRIP)
    m = _BOXED.match(text)
    if m:
        text = m.group(1).strip(_STRIP)
    return text.upper()


def parse_judgement(reply: str) -> Optional[bool]:
    """True for CORRECT, False for INCORRECT, None for anything else.

    Reads what follows the judge's last ``</think>``; tolerates case,
    markdown emphasis, quotes, trailing punctuation, a ``Verdict:`` prefix, a
    box; else takes the last non-empty line under the same rules. A reply that
    merely contains the word ("not CORRECT") is not parsed.
    """
    if not isinstance(reply, str):
        return None
    think = reply.rfind("</think>")
    if think >= 0:
        reply = reply[think + len("</think>"):]
    candidates = [reply]
    lines = [ln for ln in reply.splitlines() if ln.strip(_STRIP)]
    if len(lines) > 1:
        candidates.append(lines[-1])
    for text in candidates:
        label = _normalise_label(text)
        if label == "CORRECT":
            return True
        if label == "INCORRECT":
            return False
    return None


def _reference_text(reference: object) -> str:
    if isinstance(reference, str):
        return reference
    try:
        return json.dumps(reference, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(reference)


class JudgeVerifier:
    """``(response, reference) -> Verdict`` by asking a hosted model; see the module doc.

    ``client_config`` is a `ChatClientConfig` (or a ready `ChatClient`). The
    judge is asked for one choice (``n=1``) whatever the config says.
    Picklable, so it can travel to Beam workers.
    """

    def __init__(
        self,
        client_config: Union[ChatClientConfig, ChatClient],
        prompt_path: Optional[Union[str, Path]] = None,
    ):
        self.client = client_config if isinstance(client_config, ChatClient) else ChatClient(client_config)
        self.prompt_path = prompt_path
        self.template = load_judge_prompt(prompt_path)

    def __repr__(self) -> str:
        return f"JudgeVerifier({self.client!r})"

    def __call__(self, response: str, reference: object, question: Optional[str] = None) -> Verdict:
        return self.batch([response], [reference], [question])[0]

    def prompt(self, candidate: str, reference: object, question: Optional[str] = None) -> str:
        """The judge prompt for one extracted answer."""
        return (
            self.template.replace("{question}", question or _NO_QUESTION)
            .replace("{reference}", _reference_text(reference))
            .replace("{candidate}", candidate)
        )

    def batch(
        self,
        responses: Sequence[str],
        references: Sequence[object],
        questions: Optional[Sequence[Optional[str]]] = None,
    ) -> list[Verdict]:
        """One Verdict per (response, reference), judged concurrently (``max_concurrency``)."""
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses but {len(references)} references")
        if questions is None:
            questions = [None] * len(responses)
        elif len(questions) != len(responses):
            raise ValueError(f"{len(responses)} responses but {len(questions)} questions")

        verdicts: list[Optional[Verdict]] = [None] * len(responses)
        pending: list[int] = []
        conversations: list[list[dict[str, Any]]] = []
        for i, (response, reference, question) in enumerate(zip(responses, references, questions)):
            answer = extract_answer(response, require_box=False)
            if isinstance(answer, Verdict):
                verdicts[i] = answer
                continue
            if not answer.strip():
                verdicts[i] = Verdict(0.0, NO_BOX)
                continue
            pending.append(i)
            conversations.append([user_message(self.prompt(answer, reference, question))])

        results = self.client.complete_many(conversations, n=1) if conversations else []
        for i, result in zip(pending, results):
            verdicts[i] = self._verdict(result)
        return verdicts  # type: ignore[return-value]

    @staticmethod
    def _verdict(result: Result) -> Verdict:
        if result.error is not None or not result.texts:
            log.warning("judge request failed: %s", result.error)
            return Verdict(0.0, JUDGE_ERROR)
        judged = parse_judgement(result.texts[0])
        if judged is None:
            log.debug("judge reply not understood: %.200r", result.texts[0])
            return Verdict(0.0, JUDGE_UNPARSEABLE)
        return RIGHT if judged else WRONG


def judge_verifier_from(mapping: Mapping[str, Any]) -> JudgeVerifier:
    """A JudgeVerifier from a plain dict (``prompt_path`` plus `ChatClientConfig` fields), e.g. from YAML."""
    fields = dict(mapping)
    prompt_path = fields.pop("prompt_path", None)
    return JudgeVerifier(ChatClientConfig(**fields), prompt_path=prompt_path)
