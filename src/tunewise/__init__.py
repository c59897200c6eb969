"""tunewise: fine-tune chat language models with LoRA and QLoRA, correctly by default."""

__version__ = "0.1.0"
