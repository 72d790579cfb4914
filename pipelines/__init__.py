"""quarry.pipelines."""
