"""Command-line tools: export, bags, evaluation, benchmarks, demo."""
