"""quarry.pipelines."""

from quarry.pipelines import beam_fixes  # noqa: F401  (fixes a Beam data-loss bug before any pipeline runs)
