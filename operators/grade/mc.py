"""Multiple choice -> fill in the blank (GLM-4.5V §5: remove guessing from RL data).

A multiple-choice question lets a policy earn reward by guessing one of four
letters. `to_fill_in` drops the options and asks for the answer text itself,
when the correct option can stand alone as an answer. It cannot when it
only makes sense next to the other options ("all of the above", "both A and
B", "C"), or is empty; those come back as a `Rejection` with reason
``mc_not_convertible`` and a detail saying which rule refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from quarry.operators.base import Rejection

MC_NOT_CONVERTIBLE = "mc_not_convertible"
REASONS: tuple[str, ...] = (MC_NOT_CONVERTIBLE,)  # the rest below are details, not reasons

# Details of the rejection (after "detail: ...").
EMPTY_OPTION = "empty_option"
REFERS_TO_OPTIONS = "refers_to_options"
UNKNOWN_ANSWER = "unknown_answer"
AMBIGUOUS_ANSWER = "ambiguous_answer"
DUPLICATE_OPTIONS = "duplicate_options"
NO_OPTIONS = "no_options"
QUESTION_NEEDS_OPTIONS = "question_needs_options"

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class FillIn:
    """A converted question: the question without options, the answer text, and the original."""

    question: str
    answer: str
    original_question: str
    original_options: tuple[str, ...]
    original_answer: str


# An option that refers to other options rather than saying something:
# "all/none/both/neither/any of the above|these|them", "both A and B",
# "A and C", "only B", "options A, B and D", "none".
_ABOVE = re.compile(
    r"\b(?:all|none|both|neither|either|any|each)\s+(?:of\s+)?(?:the\s+)?(?:above|below|these|those|them|"
    r"(?:other\s+)?(?:options|choices|answers))\b",
    re.IGNORECASE,
)
_LETTER_WORDS = frozenset(
    {"and", "or", "both", "neither", "nor", "either", "only", "option", "options", "choice", "choices",
     "answer", "answers", "all", "none", "&", "but", "not"}
)
# A question that cannot be asked without its options ("Which of the
# following ...?"): converting it needs a rewrite (a model), not a rule.
_NEEDS_OPTIONS = re.compile(
    r"\b(?:of|from)\s+the\s+(?:following|options|choices|answers)\b|\bthe\s+(?:options|choices)\b|"
    r"\b(?:listed|given)\s+(?:below|above)\b|\b(?:option|choice)\s+[A-Z]\b",
    re.IGNORECASE,
)
# Lines that tell the model how to answer a multiple-choice question: they
# make no sense once the options are gone.
_MC_INSTRUCTION = re.compile(
    r"^\s*(?:please\s+)?(?:answer|choose|select|pick|respond)\b[^\n]*"
    r"\b(?:option|options|choice|choices|letter)\b[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)


def _norm(text: str) -> str:
    s = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(s.split()).strip(" .;:")


def refers_to_other_options(option: str, n_options: int) -> bool:
    """True when `option` only makes sense beside the other options."""
    if _ABOVE.search(option):
        return True
    tokens = re.findall(r"[A-Za-z]+|&", option)
    if not tokens:
        return False
    letters = set(LETTERS[:n_options])
    # Every word is a letter naming an option or a connective, and at least
    # one letter is there: "A", "B and C", "only D", "options A, B".
    has_letter = any(t.upper() in letters and len(t) == 1 for t in tokens)
    return has_letter and all((len(t) == 1 and t.upper() in letters) or t.lower() in _LETTER_WORDS for t in tokens)


def _answer_index(answer: str | int, options: Sequence[str]) -> int | Rejection:
    """The index of the correct option from a letter, a 0-based index or the option text."""
    if isinstance(answer, bool):
        return _reject(UNKNOWN_ANSWER, repr(answer))
    if isinstance(answer, int):
        return answer if 0 <= answer < len(options) else _reject(UNKNOWN_ANSWER, f"index {answer}")
    text_hits = [i for i, o in enumerate(options) if _norm(o) == _norm(answer)]
    m = re.fullmatch(r"\s*(?:option\s+)?\(?([A-Za-z])[.):]?\s*", answer, re.IGNORECASE)
    letter = LETTERS.find(m.group(1).upper()) if m else -1
    letter_hit = letter if 0 <= letter < len(options) else None
    if text_hits and letter_hit is not None and text_hits[0] != letter_hit:
        # Options ["B", "A"] with answer "A": the letter and the text disagree.
        return _reject(AMBIGUOUS_ANSWER, answer)
    if text_hits:
        return text_hits[0]
    if letter_hit is not None:
        return letter_hit
    return _reject(UNKNOWN_ANSWER, answer)


def _reject(detail: str, what: str = "") -> Rejection:
    return Rejection(MC_NOT_CONVERTIBLE, f"{detail}: {what}" if what else detail)


def strip_options(question: str, options: Sequence[str]) -> str:
    """The question without options written into it and without answer-format instructions.

    Options written in the question ("... ? A. cat B. dog", "(A) cat",
    one per line) are cut from the first option marker that is followed by
    the first option's text; lines such as "Answer with the option's letter"
    are dropped.
    """
    q = question
    if options:
        first = re.escape(options[0].strip())
        m = re.search(rf"(?:^|\s)(?:\(A\)|A[.):])\s*{first}", q)
        if m:
            q = q[: m.start()]
    without = _MC_INSTRUCTION.sub("", q)
    if without.strip():  # never strip a question down to nothing
        q = without
    q = re.sub(r"\b(?:Options|Choices)\s*:\s*$", "", q.strip(), flags=re.IGNORECASE)
    return "\n".join(line.rstrip() for line in q.strip().splitlines() if line.strip())


def to_fill_in(question: str, options: Sequence[str], answer: str | int) -> FillIn | Rejection:
    """Turn a multiple-choice question into fill-in-the-blank, or say why it cannot be.

    `answer` is a letter ("B", "(b)", "B."), a 0-based index, or the option
    text. Rejected (``mc_not_convertible``) when: there are no options; the
    answer names no option, or its letter and its text name different ones;
    two options are the same text (the answer text would not say which);
    the correct option is empty or refers to other options; the question,
    once its options are cut, still needs them ("Which of the following...").
    """
    opts = [str(o) for o in options]
    if not opts:
        return _reject(NO_OPTIONS)
    index = _answer_index(answer, opts)
    if isinstance(index, Rejection):
        return index
    correct = opts[index].strip()
    if not correct:
        return _reject(EMPTY_OPTION, f"option {LETTERS[index] if index < 26 else index}")
    if refers_to_other_options(correct, len(opts)):
        return _reject(REFERS_TO_OPTIONS, correct)
    if sum(_norm(o) == _norm(correct) for o in opts) > 1:
        return _reject(DUPLICATE_OPTIONS, correct)
    stripped = strip_options(question, opts)
    if not stripped or _NEEDS_OPTIONS.search(stripped):
        return _reject(QUESTION_NEEDS_OPTIONS, stripped[:80])
    return FillIn(
        question=stripped,
        answer=correct,
        original_question=question,
        original_options=tuple(opts),
        original_answer=str(answer),
    )
