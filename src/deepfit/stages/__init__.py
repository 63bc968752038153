"""Thin CLIs that dvc.yaml calls: parse arguments, validate params, call one library function."""
