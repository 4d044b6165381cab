"""The batch layer: exact recomputation from the raw archive into published Parquet views."""
