"""Chat data: loading (load.py), chat-template rendering and checks (template.py),
assistant-only labels (masking.py), and batching (batching.py)."""
