"""Operators of the ocr_search DAG: PP-OCR engines (engine), lines to entities (layout), crop-then-search tasks (tasks), synthetic posters and charts (synth)."""
