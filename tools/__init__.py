"""Developer tools: checks and before/after comparisons (not shipped in the package)."""
