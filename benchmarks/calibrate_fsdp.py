#!/usr/bin/env python3
"""`tunewise plan --gpus 2 --strategy fsdp` against the measured per-rank peak of 2 CPU processes.

Each point is one launch of 2 processes over gloo (torchrun). Each rank loads the model, adds
LoRA and shards it as `tunewise train` does under train.strategy fsdp (train/fsdp.shard: each
decoder layer, then the root), gives freed memory back, resets its peak-RSS mark, then runs two
training steps on its own micro-batch through the same forward (packed batches, lean MLP, fused
LoRA dropout). The measured figure is the peak RSS (VmHWM) minus the RSS after sharding plus the
bytes this rank's shards hold: what the tensors of a step add on top of the sharded model, as
calibrate_memory.py measures one process (the whole model is loaded on each rank before it is
sharded, so the load's own peak is not the training peak the planner predicts).

    .venv/bin/python benchmarks/calibrate_fsdp.py
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from calibrate_memory import CHILD_ENV, model_dir, rss, vm_hwm  # noqa: E402

POINTS = [  # (model, method, seq_len, micro-batch per rank)
    ("smollm2-135m-instruct", "lora", 256, 4),
    ("smollm2-135m-instruct", "qlora", 256, 4),
    ("rand-h1024-l8", "lora", 512, 2),
]


def measure(directory: str, method: str, seq_len: int, batch: int) -> dict:
    import torch
    import torch.distributed as dist

    from tunewise.config import LoraConfig
    from tunewise.data.masking import Encoded
    from tunewise.model.load import load_model
    from tunewise.model.lora import add_lora
    from tunewise.model.quant import keep_training_layout
    from tunewise.train.fsdp import local_bytes, shard
    from tunewise.train.loss import LossForward
    from tunewise.train.packing import make_batch
    from tunewise.train.patches import enable_packing
    from tunewise.train.swiglu import enable_lean_mlp

    dist.init_process_group("gloo")
    model = load_model(directory, "bfloat16", "nf4" if method == "qlora" else "none", "cpu")
    keep_training_layout(model)
    packed = enable_packing(model)
    enable_lean_mlp(model)
    model = add_lora(model, LoraConfig())
    forward = shard(LossForward(model))
    optimizer = torch.optim.AdamW([p for p in forward.parameters() if p.requires_grad], lr=1e-4)
    forward.train()
    rows = torch.randint(100, 1000, (batch, seq_len)).tolist()
    batch_ = make_batch([Encoded(r, r) for r in rows], 0, packed)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    sharded = rss()
    open("/proc/self/clear_refs", "w").write("5")
    for _ in range(2):
        (forward(batch_) / (batch * seq_len)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"peak": vm_hwm() - sharded + local_bytes(forward), "rank": dist.get_rank()}


def main() -> None:
    if len(sys.argv) > 1:  # a rank
        directory, method, seq_len, batch, out = sys.argv[1:]
        found = measure(directory, method, int(seq_len), int(batch))
        Path(out, f"rank-{found['rank']}.json").write_text(json.dumps(found))
        return
    from tunewise.plan import plan, resolve_shape

    root = Path(tempfile.mkdtemp(prefix="tunewise-fsdp-calib-"))
    print("2 CPU processes (gloo); per-rank peak of two training steps on top of the sharded model")
    print(f"{'model':<22}{'method':<7}{'seq':>5}{'batch':>6}{'predicted MiB':>15}{'measured MiB (r0, r1)':>24}"
          f"{'error':>8}")
    for name, method, seq_len, batch in POINTS:
        directory = model_dir(name, root)
        out = Path(tempfile.mkdtemp(dir=root))
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        __file__, directory, method, str(seq_len), str(batch), str(out)], check=True,
                       env={**CHILD_ENV, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
        peaks = [json.loads((out / f"rank-{r}.json").read_text())["peak"] for r in (0, 1)]
        predicted = plan(resolve_shape(directory if name.startswith("rand-") else name), method, seq_len, batch,
                         gpus=2, strategy="fsdp").total_bytes
        error = (predicted - max(peaks)) / max(peaks)
        print(f"{name:<22}{method:<7}{seq_len:>5}{batch:>6}{predicted / 2**20:>15.0f}"
              f"{peaks[0] / 2**20:>12.0f},{peaks[1] / 2**20:>11.0f}{error:>+8.0%}", flush=True)


if __name__ == "__main__":
    main()
