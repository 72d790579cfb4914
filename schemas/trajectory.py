"""Tool-use trajectories: the steps an agent takes (crop, search) with what each returned.

ocr_search and imagemining rows carry them twice: as `trajectory` (one struct
per call, for DuckDB) and as `messages` (the OpenAI chat shape: the question,
one assistant tool call and its tool result per step, then the boxed answer),
so an SFT or RL trainer consumes them without glue. A `crop` names the image
(1-based, in the row's image order) and the box on the 0-1000 grid; its
result is what the crop reads (ocr_search) or ``<image>`` when the result is
the cropped picture itself (cut it from DIR/images with the box).
"""

from __future__ import annotations

from pydantic import Field

from quarry.schemas.common import Row

CROP_RESULT_IMAGE = "<image>"


class ToolCall(Row):
    name: str = Field(description="crop | search")
    arguments: str = Field(description="JSON object")
    result: str = Field("", description="what the tool returned: the crop's reading (or <image>), the search "
                                        "result snippet")
