"""Evidence: batched greedy generation (generate.py), task metrics (metrics.py), reports (report.py)."""
