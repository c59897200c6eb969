"""Export: merging an adapter into a 16-bit base (merge.py)."""
