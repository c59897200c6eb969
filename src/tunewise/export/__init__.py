"""Export: merging an adapter into a 16-bit base (merge.py); a checked GGUF and Ollama Modelfile (to_gguf.py)."""
