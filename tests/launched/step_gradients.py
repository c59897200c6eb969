"""Run by test_distributed.py, alone or under torchrun: start a run from CONFIG, take the gradients of
optimizer step 0, save this rank's (and the sequences it took) to OUT/rank-R.pt. Not a test module.

Each rank is made to measure a different token budget (as GPUs with different free memory would):
the run must agree on the smallest, or the ranks would plan different micro-batches."""

import os
import sys

import torch
from rich.console import Console

from tunewise.config import load_config
from tunewise.data.batching import step_indices
from tunewise.train import session
from tunewise.train.distributed import rank_micro_batches
from tunewise.train.loop import step_gradients
from tunewise.train.session import start_run

config_path, out = sys.argv[1], sys.argv[2]
rank = int(os.environ.get("RANK", "0"))
session.micro_batch_budget = lambda *args: (4096 - 1000 * rank, None)
s = start_run(load_config(config_path), False, Console(quiet=True))
loss, step_tokens, _ = step_gradients(s, 0)
tc = s.config.train
plan = rank_micro_batches(step_indices(len(s.data.train), tc.batch_size, tc.seed, 0),
                          [len(x.input_ids) for x in s.data.train], tc.micro_batch_size, s.token_budget, s.ranks)
torch.save({"grads": {n: p.grad.clone() for n, p in s.model.named_parameters() if p.requires_grad},
            "loss": loss, "step_tokens": step_tokens,
            "token_budget": s.token_budget, "sequences": sorted(i for m in plan if m.weight for i in m.indices)},
           f"{out}/rank-{s.ranks.rank}.pt")
