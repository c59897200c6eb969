#!/usr/bin/env python3
"""Side-by-side training benchmark on the SQL example and the bundled model (issue 5).

(a) the guide's SFTTrainer recipe as written (QLoRA, prepare_model_for_kbit_training, batch 2 x 4
    accumulation, loss on every token, paged_adamw_32bit), adapted only where today's API refuses it:
    warmup_ratio -> warmup_steps, max_seq_length -> max_length, and on a CPU paged_adamw_32bit
    (CUDA only) -> adamw_torch;
(b) TRL tuned fairly: completion-only loss (prompt/completion data), micro-batch 8, no kbit prep;
(c) tunewise train.
Same data (first N train examples), model, quantization, LoRA (r16, alpha 32, dropout 0.05, all
linear), lr 2e-4 cosine with 3% warmup, 1 epoch, 8 sequences per optimizer step. Each run is its own
process, in alternating order; then one evaluator process per adapter computes the validation loss
on assistant tokens (the same code for all) and sql_exec on the held-out test split.

Everything runs on the GPU when one is visible (peak memory is then torch.cuda.max_memory_allocated
of the training process, beside its peak RSS), else on the CPU.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_train.py --examples 240 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "examples" / "sql"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def subset(n: int, out: Path) -> Path:
    lines = (SQL / "train.jsonl").read_text().splitlines()[:n]
    path = out / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def messages_only(path: Path, out: Path, prompt_completion: bool) -> Path:
    rows = []
    for line in path.read_text().splitlines():
        msgs = json.loads(line)["messages"]
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]} if prompt_completion else {"messages": msgs})
    target = out / ("pc.jsonl" if prompt_completion else "messages.jsonl")
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def finish(out: Path, seconds: float) -> None:
    """The child's result: training seconds and, on a GPU, its peak allocated/reserved memory."""
    import torch

    result = {"train_seconds": seconds}
    if on_gpu():
        result |= {"gpu_peak": torch.cuda.max_memory_allocated(), "gpu_reserved": torch.cuda.max_memory_reserved()}
    (out / "result.json").write_text(json.dumps(result))


def run_trl(variant: str, train: Path, out: Path, quant: str) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from tunewise.model.load import resolve_model

    model_name = resolve_model("smollm2-135m-instruct")
    kwargs = {"dtype": torch.bfloat16}
    if quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(model_name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if variant == "a" and quant == "nf4":
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.05, bias="none",
                      task_type="CAUSAL_LM")
    data = messages_only(train, out, prompt_completion=(variant == "b"))
    dataset = load_dataset("json", data_files={"train": str(data)})["train"]
    (out / "v").mkdir(exist_ok=True)
    val = load_dataset("json", data_files={"train": str(messages_only(SQL / "val.jsonl", out / "v", False))})["train"]
    per_device, accumulation = (2, 4) if variant == "a" else (8, 1)
    steps = math.ceil(len(dataset) / 8)
    args = SFTConfig(output_dir=str(out / "trl"), num_train_epochs=1, per_device_train_batch_size=per_device,
                     gradient_accumulation_steps=accumulation, learning_rate=2e-4, lr_scheduler_type="cosine",
                     warmup_steps=math.ceil(0.03 * steps), logging_steps=10, save_steps=100,
                     eval_strategy="steps" if variant == "a" else "no", eval_steps=50, bf16=True,
                     max_length=2048, optim="paged_adamw_32bit" if variant == "a" and on_gpu() else "adamw_torch",
                     report_to=[], use_cpu=not on_gpu(), seed=0,
                     **({"completion_only_loss": True} if variant == "b" else {}))
    trainer = SFTTrainer(model=model, train_dataset=dataset, eval_dataset=val if variant == "a" else None,
                         peft_config=lora, args=args, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(out / "adapter"))
    finish(out, seconds)


def run_tunewise(train: Path, out: Path, quant: str) -> None:
    config = {"model": {"name": "smollm2-135m-instruct", "quantization": quant},
              "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
              "data": {"train": str(train), "val": str(SQL / "val.jsonl"), "max_seq_len": 2048, "allow_small": True},
              "train": {"epochs": 1, "batch_size": 8, "lr": 2e-4, "scheduler": "cosine", "warmup_ratio": 0.03,
                        "eval_every": 10**6, "save_every": 10**6, "seed": 0}, "output_dir": str(out / "run")}
    path = out / "config.yaml"
    path.write_text(json.dumps(config))
    from tunewise.config import load_config
    from tunewise.train.loop import train as run

    start = time.perf_counter()
    run(load_config(path))
    seconds = time.perf_counter() - start
    os.symlink(out / "run" / "adapter", out / "adapter")
    finish(out, seconds)


def evaluate(adapter: Path, quant: str) -> dict:
    """The same measurement for every variant: val loss on assistant tokens, sql_exec on test."""
    from peft import PeftModel

    from tunewise.data.load import load_examples
    from tunewise.data.masking import encode_all
    from tunewise.evaluate.generate import generate, prompt_messages
    from tunewise.evaluate.metrics import sql_exec
    from tunewise.model.load import load_model, load_tokenizer, resolve_model
    from tunewise.train.loop import evaluate as val_loss

    device = "cuda" if on_gpu() else "cpu"
    source = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(source)
    model = PeftModel.from_pretrained(load_model(source, "bfloat16", quant, device), str(adapter))
    val, _ = encode_all(tokenizer, load_examples(SQL / "val.jsonl"), 2048, "val")
    loss = val_loss(model, val, tokenizer.pad_token_id, device)
    test = load_examples(SQL / "test.jsonl")
    outputs = generate(model, tokenizer, [prompt_messages(e.messages) for e in test], 128, 16)
    score = sum(sql_exec(o, e.messages[-1]["content"], e.meta) for o, e in zip(outputs, test)) / len(test)
    return {"val_loss": loss, "sql_exec": score}


def child(args) -> None:
    out = Path(args.out)
    if args.child == "eval":
        print(json.dumps(evaluate(out / "adapter", args.quant)))
    elif args.child == "c":
        run_tunewise(Path(args.train), out, args.quant)
    else:
        run_trl(args.child, Path(args.train), out, args.quant)


def training_flops(model_dir: str, encoded: list, rank: int = 16) -> float:
    """Useful model FLOPs of one epoch of LoRA training on `encoded`, the same count for every run:
    frozen linear layers forward + input gradient (4 x params x tokens), adapters forward + both
    gradients (6 x params x tokens), causal attention (6 x n^2 x hidden per layer: forward and
    backward over the lower triangle), and the LM head at trained positions only (forward + input
    gradient). Padding, prompt logits and recomputation count as no work."""
    from tunewise.data.masking import IGNORE

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    d, f, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    kv = d // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    linear = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]  # q k v o gate up down
    base = layers * sum(i * o for i, o in linear)
    lora = layers * sum(rank * (i + o) for i, o in linear)
    total = 0.0
    for item in encoded:
        n = len(item.input_ids)
        trained = sum(1 for label in item.labels[1:] if label != IGNORE)
        total += 4 * base * n + 6 * lora * n + 6 * layers * n * n * d + 4 * d * vocab * trained
    return total


def run_child(cmd: list[str], log: Path) -> tuple[float, int, str, str, int]:
    """Wall seconds, peak RSS bytes (of the child alone, from wait4), stdout, stderr, exit code.

    The child's output goes to files, not pipes: reading one pipe to its end while the child fills
    the other (progress bars, per-step warnings) deadlocks both processes."""
    start = time.perf_counter()
    with open(log.with_suffix(".out"), "w+") as out, open(log.with_suffix(".err"), "w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        return (time.perf_counter() - start, usage.ru_maxrss * 1024, out.read(), err.read(),
                os.waitstatus_to_exitcode(status))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quant", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--only", default="a,b,c")
    parser.add_argument("--workdir", help="where runs and logs go (default: a new temporary directory)")
    parser.add_argument("--child")
    parser.add_argument("--out")
    parser.add_argument("--train")
    args = parser.parse_args()
    if args.child:
        return child(args)
    from tunewise.data.load import load_examples
    from tunewise.data.masking import encode_all
    from tunewise.model.load import load_tokenizer, resolve_model

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tunewise-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs, adapters and each child's output: {root}", flush=True)
    train = subset(args.examples, root)
    enc, stats = encode_all(load_tokenizer(resolve_model("smollm2-135m-instruct")), load_examples(train), 2048, "train")
    variants = args.only.split(",")
    rows = []
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            out = root / f"{v}-{r}"
            out.mkdir()
            wall, rss, _, err, code = run_child([sys.executable, __file__, "--child", v, "--out", str(out),
                                                 "--train", str(train), "--quant", args.quant], out / "train")
            if code:
                print(f"({v}) failed:\n{err[-3000:]}", flush=True)
                continue
            result = json.loads((out / "result.json").read_text())
            seconds, gpu = result["train_seconds"], result.get("gpu_peak")
            _, _, ev, err, code = run_child([sys.executable, __file__, "--child", "eval", "--out", str(out),
                                             "--quant", args.quant], out / "eval")
            if code:
                print(f"({v}) evaluation failed:\n{err[-3000:]}", flush=True)
            if code == 0:
                scores = json.loads(ev.strip().splitlines()[-1])
            else:
                scores = {"val_loss": float("nan"), "sql_exec": float("nan")}
            rows.append((v, r, wall, seconds, stats.trained_tokens / seconds, rss, gpu, scores["val_loss"],
                         scores["sql_exec"]))
            gpu_text = f", peak GPU {gpu / 2**20:.0f} MiB" if gpu is not None else ""
            print(f"({v}) round {r}: wall {wall:.0f}s, train {seconds:.1f}s, "
                  f"{stats.trained_tokens / seconds:.1f} trained tok/s, "
                  f"peak RSS {rss / 2**20:.0f} MiB{gpu_text}, val loss {scores['val_loss']:.4f}, "
                  f"sql_exec {scores['sql_exec']:.1%}",
                  flush=True)
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from matmul_peak import measure

    peak = max(measure().values()) * 1e9
    flops = training_flops(resolve_model("smollm2-135m-instruct"), enc)
    where = f"GPU {torch.cuda.get_device_name()}" if on_gpu() else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.examples} examples, {stats.trained_tokens} assistant tokens, {stats.total_tokens} tokens, "
          f"quant={args.quant}; "
          f"{flops / 1e12:.2f} TFLOP of useful work; {where}, torch {torch.__version__}; "
          f"measured bf16 matmul peak {peak / 1e9:.0f} GFLOP/s")
    gpu_head = " peak GPU MiB |" if on_gpu() else ""
    print(f"| run | round | wall s | train s | trained tok/s | MFU | peak RSS MiB |{gpu_head} val loss | sql_exec |")
    print("|---|---|---|---|---|---|---|" + ("---|" if on_gpu() else "") + "---|---|")
    for v, r, wall, seconds, tps, rss, gpu, loss, score in rows:
        gpu_cell = f" {gpu / 2**20:.0f} |" if gpu is not None else ""
        print(f"| ({v}) | {r} | {wall:.0f} | {seconds:.1f} | {tps:.1f} | {flops / seconds / peak:.2%} | "
              f"{rss / 2**20:.0f} |"
              f"{gpu_cell} {loss:.4f} | {score:.1%} |")


if __name__ == "__main__":
    main()
