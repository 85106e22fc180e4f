"""Judged query-passage data: reading it from files or ir_datasets, checking it, and loading it for an audit."""
