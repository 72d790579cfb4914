"""PDF pages -> page images, text lines in reading order, tiers (the `documents` DAG's operators)."""
