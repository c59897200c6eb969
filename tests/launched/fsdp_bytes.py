"""Run by test_distributed.py under torchrun: start an FSDP run from CONFIG and write, for this rank,
the parameter bytes it holds and the whole model's, to OUT/rank-R.json. Not a test module."""

import json
import sys

from rich.console import Console

from tunewise.config import load_config
from tunewise.model.quant import count_4bit_linear
from tunewise.train.fsdp import local_bytes
from tunewise.train.session import start_run

config_path, out = sys.argv[1], sys.argv[2]
s = start_run(load_config(config_path), False, Console(quiet=True))
whole = sum(p.numel() * p.element_size() for p in s.forward.parameters())  # a DTensor's numel is the whole
json.dump({"rank_bytes": local_bytes(s.forward), "model_bytes": whole, "strategy": s.ranks.strategy,
           "linear_4bit": count_4bit_linear(s.model)},
          open(f"{out}/rank-{s.ranks.rank}.json", "w"))
