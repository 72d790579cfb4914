"""Input parsing: one opened file of each kind -> its records, plain Python (no Beam).

The opener is passed in (a file object, or a callable that reads a path), so
Beam's FileSystems stays in `quarry.pipelines.read`; family readers interpret
the records these parsers yield.

- `kinds`: a path's kind from its suffix (tar, parquet, jsonl, image, svg, urls; a reader's own).
- `tar`: WebDataset tars: samples (members sharing a key, `key.json` parsed once) or single members;
  per-member size cap, dotfiles skipped, damage as a final `TarDamage`.
- `parquet`: footers (names, schema) and rows streamed in batches from chosen columns.
- `jsonl`: JSON objects with line numbers, the first few, and lines of bounded size.
- `tables`: rows of a Parquet or JSONL table under one key scheme (`row:N`, `line:N`); their columns.
- `files`: single files: an image with sidecars, SVG values, a saved HTML page, a URL list.
- `columns`: the column names readers look for; sniffing by name and by Arrow type.
- `image_text`: image-text records (caption and ocr_search readers) from the parsed records.
- `records`: `Unreadable` (a record that did not read) and `clean_source`.
- `reasons`: the reason codes of the `read` stage (`REASONS`).
"""
