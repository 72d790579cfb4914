"""Operators of the interleaved DAG: document shapes and tiers (documents), ads and QR codes (ads), text quality (text_quality)."""
