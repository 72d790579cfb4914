"""JudgeVerifier against a real local HTTP server playing the judge model."""

from __future__ import annotations

import pickle
import time

import pytest

from quarry.operators.chat_client import ChatClientConfig
from quarry.operators.grade.judge import (
    JUDGE_ERROR,
    JUDGE_UNPARSEABLE,
    JudgeVerifier,
    judge_verifier_from,
    load_judge_prompt,
    parse_judgement,
)
from quarry.operators.grade.verify import Verdict

B0, B1 = "<|begin_of_box|>", "<|end_of_box|>"


class Judge:
    """A fake judge: replies ``reply(prompt)`` (a str, or an int HTTP status to fail with)."""

    def __init__(self, start, reply):
        self.prompts: list[str] = []
        self.bodies: list[dict] = []

        def behave(server, body, n_seen):
            prompt = body["messages"][0]["content"]
            self.prompts.append(prompt)
            self.bodies.append(body)
            out = reply(prompt)
            if isinstance(out, int):
                return out, b'{"error": "down"}', None
            return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": out}}]}, None

        self.server = start(behave)
        self.config = ChatClientConfig(
            base_url=f"{self.server.base_url}/v1",
            model="judge",
            api_key_env=None,
            timeout_s=1.0,
            max_retries=1,
            backoff_s=0.01,
            max_backoff_s=0.02,
            n=4,  # the judge asks for one choice whatever the config says
        )

    def close(self):
        self.server.close()


@pytest.fixture
def judge(chat_server):
    return lambda reply: Judge(chat_server, reply)


def by_reference(prompt: str) -> str:
    """CORRECT when the candidate section equals the reference section."""
    ref = prompt.split("Reference answer:\n", 1)[1].split("\n\nCandidate answer:", 1)[0]
    cand = prompt.split("Candidate answer:\n", 1)[1].split("\n\nReply with", 1)[0]
    return "CORRECT" if ref.strip() == cand.strip() else "INCORRECT"


def test_correct_and_incorrect(judge):
    j = judge(by_reference)
    verify = JudgeVerifier(j.config)
    assert verify(f"<think>hmm {B0}3{B1}</think>The answer is {B0}Paris{B1}", "Paris") == Verdict(1.0, "")
    assert verify(f"<think>...</think>{B0}Lyon{B1}", "Paris") == Verdict(0.0, "mismatch")
    # the prompt carries the extracted answer, not the thinking
    assert "Candidate answer:\nParis\n" in j.prompts[0]
    assert "hmm" not in j.prompts[0]
    assert all(b["n"] == 1 and b["model"] == "judge" for b in j.bodies)


def test_unboxed_answer_is_judged(judge):
    j = judge(by_reference)
    assert JudgeVerifier(j.config)("<think>x</think>Paris", "Paris") == Verdict(1.0)


def test_question_and_structured_reference_in_prompt(judge):
    j = judge(lambda p: "CORRECT")
    JudgeVerifier(j.config)(f"{B0}{{1, 2}}{B1}", {"set": [1, 2]}, question="Which {numbers}?")
    (prompt,) = j.prompts
    assert "Which {numbers}?" in prompt
    assert '{"set": [1, 2]}' in prompt
    assert "Candidate answer:\n{1, 2}" in prompt


@pytest.mark.parametrize("reply", ["maybe", "", "The answer is CORRECT but also INCORRECT", "not correct", "CORRECTISH"])
def test_garbage_reply_is_unparseable(judge, reply):
    j = judge(lambda p: reply)
    assert JudgeVerifier(j.config)(f"{B0}4{B1}", "4") == Verdict(0.0, JUDGE_UNPARSEABLE)


def test_endpoint_down_is_judge_error(judge):
    j = judge(lambda p: 500)
    assert JudgeVerifier(j.config)(f"{B0}4{B1}", "4") == Verdict(0.0, JUDGE_ERROR)
    assert len(j.prompts) == 2  # retried once

    url = j.config.base_url
    j.close()
    t0 = time.monotonic()
    offline = JudgeVerifier(ChatClientConfig(**{**j.config.__dict__, "base_url": url}))
    assert offline(f"{B0}4{B1}", "4") == Verdict(0.0, JUDGE_ERROR)
    assert time.monotonic() - t0 < 3.0


def test_extraction_failures_skip_the_judge(judge):
    j = judge(lambda p: "CORRECT")
    verify = JudgeVerifier(j.config)
    assert verify(f"{B0}1{B1} {B0}2{B1}", "1") == Verdict(0.0, "multiple_boxes")
    assert verify(f"{B0}1", "1") == Verdict(0.0, "unbalanced_box")
    assert verify("<think>all thought</think>   ", "1") == Verdict(0.0, "no_box")
    assert j.prompts == []


def test_batch(judge):
    j = judge(by_reference)
    verdicts = JudgeVerifier(j.config).batch(
        [f"{B0}a{B1}", f"{B0}b{B1}", f"{B0}x{B1}{B0}", f"{B0}d{B1}"],
        ["a", "c", "x", "d"],
    )
    assert verdicts == [Verdict(1.0), Verdict(0.0, "mismatch"), Verdict(0.0, "unbalanced_box"), Verdict(1.0)]
    assert len(j.prompts) == 3
    with pytest.raises(ValueError):
        JudgeVerifier(j.config).batch(["a"], [])


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("CORRECT", True),
        ("INCORRECT", False),
        ("  correct.\n", True),
        ("**INCORRECT**", False),
        ("Verdict: CORRECT", True),
        ("Final answer: `incorrect`", False),
        ("<think>It might be INCORRECT... no.</think>\nCORRECT", True),
        ("The candidate matches the reference.\n\nCORRECT", True),
        (f"{B0}INCORRECT{B1}", False),
        ("\\boxed{CORRECT}", True),
        ("CORRECT INCORRECT", None),
        ("It is not CORRECT", None),
        ("yes", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_judgement(reply, expected):
    assert parse_judgement(reply) is expected


def test_prompt_file(tmp_path, judge):
    default = load_judge_prompt()
    assert "{candidate}" in default and "{reference}" in default and "CORRECT or INCORRECT" in default

    custom = tmp_path / "p.txt"
    custom.write_text("Ref={reference} Cand={candidate}. Say CORRECT or INCORRECT.")
    j = judge(lambda p: "CORRECT")
    assert JudgeVerifier(j.config, prompt_path=custom)(f"{B0}7{B1}", 7) == Verdict(1.0)
    assert j.prompts == ["Ref=7 Cand=7. Say CORRECT or INCORRECT."]

    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholders")
    with pytest.raises(ValueError, match="candidate"):
        JudgeVerifier(j.config, prompt_path=bad)


def test_pickles_and_from_mapping(judge):
    j = judge(lambda p: "INCORRECT")
    verify = pickle.loads(pickle.dumps(JudgeVerifier(j.config)))
    assert verify(f"{B0}1{B1}", "2") == Verdict(0.0, "mismatch")
    from_dict = judge_verifier_from({"base_url": j.config.base_url, "model": "judge", "api_key_env": None})
    assert from_dict.client.config.model == "judge"
