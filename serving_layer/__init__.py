"""The serving layer: the REST API that merges batch and speed views (issue 5)."""
