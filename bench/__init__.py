"""Benchmarks of the `skill` pipeline; run each as ``python -m bench.<name>`` (see BENCHMARKS.md)."""
