"""quarry.schemas."""
