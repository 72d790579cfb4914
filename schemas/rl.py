"""The RL task contract: the columns every RL-producing DAG writes and `grade` reads.

A row of gui, ocr_search, imagemining or svg (and any later DAG with a
verifiable answer) carries, besides the `Sample` columns:

- `task`: the quarry task type (a `Sample` column);
- `question`: the prompt text the policy sees with the image;
- `answer`: the reference answer (boxes and actions inside
  ``<|begin_of_box|>...<|end_of_box|>``, stripped before judging);
- `answer_aliases`: other answers that count as right (exact, numeric and
  OCR rules honour them; grounding, action, svg_render and html_render do not);
- the image: `image_id` into the run's `DIR/images/` table (many rows per
  image) or `image` bytes in the row;
- `verifier`: the rule that judges a response and its parameters
  (`VerifierSpec`), null on rows that are not RL tasks (svg_to_image and gui code_to_ui pairs).

`quarry run grade --input OUT/<dag>` reads a run directory with these columns
directly, and `quarry selfcheck OUT/<dag>` checks that each row's own answer
scores 1 under its verifier and a perturbed answer does not.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from quarry.schemas.common import Row

VerifierName = Literal["exact", "numeric", "ocr", "grounding", "action", "svg_render", "html_render"]
VERIFIER_NAMES: tuple[str, ...] = VerifierName.__args__  # type: ignore[attr-defined]


class VerifierSpec(Row):
    """Which rule judges a row's responses, with its parameters (unset = the rule's default).

    A parameter the rule does not take is an error (`grade` rejects the row as
    ``read/invalid_verifier``), so a typo never silently changes a reward.
    """

    kind: VerifierName = Field(description="the rule: " + ", ".join(VERIFIER_NAMES))
    rel_tol: Optional[float] = Field(
        None, ge=0.0, description="numeric: relative tolerance (0 = exact, e.g. years); default 1e-6")
    abs_tol: Optional[float] = Field(None, ge=0.0, description="numeric: absolute tolerance near zero; default 1e-9")
    iou: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="grounding: IoU a predicted box needs to match; action: IoU of a "
                                          "predicted box with the target box; default 0.5")
    box: Optional[list[float]] = Field(
        None, description="action: the target element's box [x1, y1, x2, y2] on the 0-1000 grid; a predicted "
                          "point must fall inside it")
    viewport: Optional[str] = Field(
        None, pattern=r"^[0-9]{2,4}x[0-9]{2,4}@[0-9]+(\.[0-9]+)?m?$",
        description="html_render: the browser window both documents are rendered in, WIDTHxHEIGHT@SCALE in CSS "
                    "pixels and device pixels per CSS pixel, `m` at the end for a mobile viewport (1280x720@1, "
                    "390x844@2m)")
    judge: bool = Field(
        False, description="exact/numeric: a mismatch is asked again of the model judge when `grade` has one "
                           "(VQA-type answers: synonyms, units)")

    PARAMS: ClassVar[dict[str, tuple[str, ...]]] = {  # which parameters each rule takes
        "exact": ("judge",),
        "numeric": ("rel_tol", "abs_tol", "judge"),
        "ocr": (),
        "grounding": ("iou",),
        "action": ("iou", "box"),
        "svg_render": (),
        "html_render": ("viewport",),
    }

    @field_validator("box")
    @classmethod
    def _box(cls, v: Optional[list[float]]) -> Optional[list[float]]:
        if v is not None and (len(v) != 4 or not (0 <= v[0] <= v[2] <= 1000 and 0 <= v[1] <= v[3] <= 1000)):
            raise ValueError(f"box must be [x1, y1, x2, y2] with 0 <= x1 <= x2 <= 1000, 0 <= y1 <= y2 <= 1000: {v}")
        return v

    @model_validator(mode="after")
    def _params_fit_kind(self) -> "VerifierSpec":
        allowed = self.PARAMS[self.kind]
        extra = [name for name in ("rel_tol", "abs_tol", "iou", "box", "viewport") if getattr(self, name) is not None
                 and name not in allowed]
        if self.judge and "judge" not in allowed:
            extra.append("judge")
        if extra:
            raise ValueError(f"verifier {self.kind!r} takes no {', '.join(extra)} (it takes: "
                             f"{', '.join(allowed) or 'no parameters'})")
        return self


class RlTask(Row):
    """The contract columns an RL row model mixes in (with `Sample`'s `task` and an image)."""

    question: str = Field(description="the prompt the policy sees with the image")
    answer: str = Field(description="the reference answer; boxes and actions inside <|begin_of_box|>...<|end_of_box|>")
    answer_aliases: list[str] = Field(default_factory=list, description="other answers that count as right")
    verifier: Optional[VerifierSpec] = Field(
        description="the rule that judges responses, with its parameters; null when the row is not an RL task")


# Relative tolerance of quantity answers: KB quantities are rounded figures ("2,737 m" for 2,736.5).
QUANTITY_REL_TOL = 0.01


def answer_verifier(answer_type: str) -> VerifierSpec:
    """The rule for a knowledge answer (imagemining, ocr_search): years exact, quantities within 1%, names and
    other literals by exact match over the aliases, asked again of a model judge where `grade` has one
    (GLM-4.5V Table 1: "exact match, falling back to a model judge")."""
    if answer_type == "year":
        return VerifierSpec(kind="numeric", rel_tol=0.0)
    if answer_type == "quantity":
        return VerifierSpec(kind="numeric", rel_tol=QUANTITY_REL_TOL)
    return VerifierSpec(kind="exact", judge=True)
