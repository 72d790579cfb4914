"""Reason codes of the `read` stage: why a record of an input file did not become a sample.

Every reader (the shared parsers in this package and the family readers that
interpret their records) emits these and only these; `REASONS` lists them for
`quarry list`.
"""

from __future__ import annotations

# any file kind
UNREADABLE_FILE = "unreadable_file"  # cannot be opened, or a corrupt Parquet page / truncated .gz
FILE_TOO_LARGE = "file_too_large"  # a member, cell or file over the configured byte limit
INVALID_JSON = "invalid_json"  # a JSONL line that is not a JSON object
RECORD_TOO_LARGE = "record_too_large"  # a JSONL line over 16 MiB (jsonl.MAX_LINE_BYTES; interleaved: document.max_record_bytes)
# WebDataset tars and image files with sidecars
UNREADABLE_TAR = "unreadable_tar"  # a truncated or corrupt tar: the sample being read and the rest
INVALID_METADATA = "invalid_metadata"  # `key.json` / `stem.json` is not a JSON object
# image-text records (caption, ocr_search, grade, imagemining)
MISSING_IMAGE = "missing_image"
MISSING_CAPTION = "missing_caption"
CAPTION_NOT_TEXT = "caption_not_text"  # the caption member is not UTF-8
# family records
MISSING_SVG = "missing_svg"  # svg: no SVG text in the row
MISSING_URL = "missing_url"  # gui: no URL in the table row
INVALID_URL = "invalid_url"  # gui: a URL that cannot be a page input
MISSING_FIELD = "missing_field"  # grade: a required sample field
INVALID_LABEL_TIER = "invalid_label_tier"  # grade: an offline label that is no tier
INVALID_ENTITIES = "invalid_entities"  # imagemining: the row's entity list

REASONS: tuple[str, ...] = (
    UNREADABLE_FILE, FILE_TOO_LARGE, INVALID_JSON, RECORD_TOO_LARGE, UNREADABLE_TAR, INVALID_METADATA,
    MISSING_IMAGE, MISSING_CAPTION, CAPTION_NOT_TEXT, MISSING_SVG, MISSING_URL, INVALID_URL, MISSING_FIELD,
    INVALID_LABEL_TIER, INVALID_ENTITIES,
)
