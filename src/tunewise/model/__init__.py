"""Models: resolving names and loading (load.py), NF4 quantization (quant.py), LoRA (lora.py)."""
