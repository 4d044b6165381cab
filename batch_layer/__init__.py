"""The batch layer: exact recomputation from the raw archive into published Parquet views (issue 4)."""
