#!/usr/bin/env python3
"""Side-by-side training benchmark on the SQL example and the bundled model (issue 5).

(a) the guide's SFTTrainer recipe as written (QLoRA, prepare_model_for_kbit_training, batch 2 x 4
    accumulation, loss on every token, paged_adamw_32bit), adapted only where today's API refuses it:
    warmup_ratio -> warmup_steps, max_seq_length -> max_length, and on a CPU paged_adamw_32bit
    (CUDA only) -> adamw_torch;
(b) TRL tuned fairly: assistant-only loss on every assistant turn (`assistant_only_loss` with generation
    markers added to the chat template, as tunewise trains), micro-batch 8, no kbit prep;
(c) tunewise train;
(d) Unsloth: FastLanguageModel (its own loading, LoRA and gradient checkpointing "unsloth") with TRL's
    SFTTrainer as Unsloth patches it, the data and batch of (b); needs a CUDA GPU;
(e) (b) with `use_liger_kernel=True`. TRL (1.15 and 1.16) then applies Liger's RMSNorm, RoPE and
    SwiGLU kernels but refuses Liger's fused linear cross-entropy: it keeps its own chunked LM head,
    which (b) has too. Needs a CUDA GPU (Triton).
Same data (first N train examples), model, quantization, LoRA (r16, alpha 32, dropout 0.05, all
linear), lr 2e-4 cosine with 3% warmup, 1 epoch, 8 sequences per optimizer step. Each run is its own
process, in alternating order; then one evaluator process loads the base model once and, adapter by
adapter, computes the validation loss on assistant tokens (the same code for all) and sql_exec on the
held-out test split.

--model: `smollm2` (the bundled SmolLM2-135M-Instruct), `llama-1b` (a random Llama-3.2-1B shape:
hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192, vocabulary 128256, tied
embeddings) or `tiny` (a random 2-layer Llama, to run the code paths on a CPU). Random models are
built once per run (seed 0, bf16) in WORKDIR/model with the SmolLM2 tokenizer (--tokenizer: another
tokenizer directory); sql_exec is not measured for them (a random model trained on a few hundred
examples writes no SQL), val loss is.

Unsloth pins older transformers/TRL/datasets than tunewise; --unsloth-path gives (d)'s process its
own PYTHONPATH (benchmarks/device/ stages one), everything else runs on the parent's.

Everything runs on the GPU when one is visible (peak memory is then torch.cuda.max_memory_allocated
of the training process, beside its peak RSS), else on the CPU.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_train.py --examples 240 --rounds 1
    .venv/bin/python benchmarks/bench_train.py --model tiny --examples 16 --only c,a,b,d,e   # code paths, CPU
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
RANDOM_SHAPES = {  # LlamaConfig keys; llama-1b is tunewise.plan.PRESETS["llama-3.2-1b"]
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=128256),  # the 1B's vocabulary: the tokenizer uses 49152 ids
}
GPU_ONLY = {"e": "Liger Kernel (Triton)"}  # Unsloth (d) has a CPU fallback of its own: it says so and trains
STEADY_FROM = 2  # steady-state throughput leaves out the first optimizer steps (CUDA/Triton warm-up, autotuning)
NOTES = {  # what differs between the runs beyond the shared hyperparameters, printed under the table
    "a": "prepare_model_for_kbit_training under nf4 (gradient checkpointing), batch 2 x 4 accumulation, "
         "loss on every token, paged AdamW on a GPU",
    "b": "TRL SFTTrainer defaults (gradient checkpointing on, its chunked LM head), assistant-only loss on every "
         "turn, batch 8",
    "c": "tunewise train defaults (no checkpointing, packed micro-batches, fused loss)",
    "d": "Unsloth FastLanguageModel + get_peft_model(use_gradient_checkpointing='unsloth'), TRL as Unsloth "
         "patches it, assistant-only loss on every turn, batch 8",
    "e": "(b) + use_liger_kernel=True (Liger's RMSNorm/RoPE/SwiGLU; TRL refuses Liger's fused cross-entropy)",
}


def subset(n: int, out: Path) -> Path:
    lines = (SQL / "train.jsonl").read_text().splitlines()[:n]
    path = out / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def messages_only(path: Path, out: Path) -> Path:
    """The conversations of a tunewise JSONL file as TRL's conversational rows (`messages` only)."""
    rows = [{"messages": json.loads(line)["messages"]} for line in path.read_text().splitlines()]
    target = out / "messages.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


# SmolLM2's ChatML template with TRL's {% generation %} markers around each assistant reply and its
# <|im_end|>, so `assistant_only_loss` trains every assistant turn of a conversation, as tunewise does.
# (Prompt/completion rows would train only the last turn: a quarter of the answers of the SQL
# example's 3-6-question conversations.) `marked_template` checks it renders exactly as the original.
_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
_MARKED_TURN = ("{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
                "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}" + _TURN
                + "{% endif %}")


def marked_template(tokenizer, data: Path) -> str:
    """The tokenizer's chat template with generation markers; refuses a template it does not know, or
    one whose marked copy renders any conversation of `data` (messages_only's rows) differently."""
    conversations = [json.loads(line)["messages"] for line in data.read_text().splitlines()]
    original = tokenizer.chat_template
    if _TURN not in original:
        raise SystemExit("bench_train: the tokenizer's chat template is not SmolLM2's ChatML; "
                         "add generation markers for it before comparing assistant-only losses")
    marked = original.replace(_TURN, _MARKED_TURN)
    for messages in conversations:
        plain = tokenizer.apply_chat_template(messages, tokenize=False)
        if tokenizer.apply_chat_template(messages, tokenize=False, chat_template=marked) != plain:
            raise SystemExit("bench_train: the marked chat template renders differently from the original")
    return marked


def build_model(kind: str, tokenizer_dir: str, path: Path) -> str:
    """A randomly initialised Llama of a named shape (seed 0, bf16), saved with the SmolLM2 tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.model.load import load_tokenizer

    if (path / "config.json").is_file():
        return str(path)
    tokenizer = load_tokenizer(tokenizer_dir)
    config = LlamaConfig(**RANDOM_SHAPES[kind], tie_word_embeddings=True, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu() else "cpu"):  # a 1B model initialised on a CPU takes minutes
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def model_dir(args) -> str:
    from tunewise.model.load import resolve_model

    if args.model == "smollm2":
        return resolve_model("smollm2-135m-instruct")
    tokenizer = args.tokenizer or resolve_model("smollm2-135m-instruct")
    return build_model(args.model, tokenizer, Path(args.workdir) / "model")


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def step_clock():
    """A TrainerCallback that records when each optimizer step ends (after the GPU has finished it)."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if on_gpu():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    return StepClock()


def train_and_finish(trainer, clock, out: Path, save) -> None:
    """A TRL trainer's run, timed; `save` writes the adapter (Unsloth's model saves it, TRL's trainer does)."""
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    save(str(out / "adapter"))
    finish(out, seconds, clock.times)


def finish(out: Path, seconds: float, step_times: list[float]) -> None:
    """The child's result: training seconds, when each step ended and, on a GPU, its peak allocated/reserved
    memory."""
    import torch

    result = {"train_seconds": seconds, "step_times": step_times}
    if on_gpu():
        result |= {"gpu_peak": torch.cuda.max_memory_allocated(), "gpu_reserved": torch.cuda.max_memory_reserved()}
    (out / "result.json").write_text(json.dumps(result))


def bnb_config():
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16)


def sft_config(variant: str, out: Path, steps: int, **extra):
    """TRL's arguments for (a), (b), (d) and (e): the shared hyperparameters, each run's batch layout."""
    from trl import SFTConfig

    per_device, accumulation = (2, 4) if variant == "a" else (8, 1)
    return SFTConfig(output_dir=str(out / "trl"), num_train_epochs=1, per_device_train_batch_size=per_device,
                     gradient_accumulation_steps=accumulation, learning_rate=2e-4, lr_scheduler_type="cosine",
                     warmup_steps=math.ceil(0.03 * steps), logging_steps=10, save_steps=100,
                     eval_strategy="steps" if variant == "a" else "no", eval_steps=50, bf16=True,
                     max_length=2048, optim="paged_adamw_32bit" if variant == "a" and on_gpu() else "adamw_torch",
                     report_to=[], use_cpu=not on_gpu(), seed=0,
                     **({} if variant == "a" else {"assistant_only_loss": True}), **extra)


def run_trl(variant: str, train: Path, out: Path, quant: str, model_name: str) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    kwargs = {"dtype": torch.bfloat16}
    if quant == "nf4":
        kwargs["quantization_config"] = bnb_config()
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(model_name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if variant == "a" and quant == "nf4":
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.05, bias="none",
                      task_type="CAUSAL_LM")
    data = messages_only(train, out)
    if variant != "a":  # every assistant turn trained, nothing else: what tunewise trains
        tokenizer.chat_template = marked_template(tokenizer, data)
    dataset = load_dataset("json", data_files={"train": str(data)})["train"]
    (out / "v").mkdir(exist_ok=True)
    val = load_dataset("json", data_files={"train": str(messages_only(SQL / "val.jsonl", out / "v"))})["train"]
    liger = {"use_liger_kernel": True} if variant == "e" else {}
    args = sft_config(variant, out, math.ceil(len(dataset) / 8), **liger)
    clock = step_clock()
    trainer = SFTTrainer(model=model, train_dataset=dataset, eval_dataset=val if variant == "a" else None,
                         peft_config=lora, args=args, processing_class=tokenizer, callbacks=[clock])
    train_and_finish(trainer, clock, out, trainer.save_model)


def run_unsloth(train: Path, out: Path, quant: str, model_name: str) -> None:
    """(d): Unsloth's own loading, LoRA and checkpointing, then TRL's SFTTrainer as Unsloth patches
    it (unsloth is imported first, as its docs require); the data, batch and schedule of (b)."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # it would fetch a README from the hub
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(out / "unsloth_compiled_cache"))
    from unsloth import FastLanguageModel  # first: it patches transformers, PEFT and TRL on import

    # isort: split
    import torch
    from datasets import load_dataset
    from trl import SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_name, max_seq_length=2048,
                                                         dtype=torch.bfloat16, load_in_4bit=(quant == "nf4"),
                                                         use_exact_model_name=True, random_state=0)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, lora_dropout=0.05, bias="none",
                                             target_modules=TARGETS, use_gradient_checkpointing="unsloth",
                                             random_state=0)
    data = messages_only(train, out)
    tokenizer.chat_template = marked_template(tokenizer, data)
    dataset = load_dataset("json", data_files={"train": str(data)})["train"]
    clock = step_clock()
    trainer = SFTTrainer(model=model, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock],
                         args=sft_config("d", out, math.ceil(len(dataset) / 8)))
    train_and_finish(trainer, clock, out, model.save_pretrained)


def run_tunewise(train: Path, out: Path, quant: str, model_name: str) -> None:
    config = {"model": {"name": model_name, "quantization": quant},
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
    events = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    finish(out, seconds, [e["time"] for e in events if e["event"] == "train"])  # wall clock, logged after each step


def evaluate_all(root: Path, runs: list[str], quant: str, source: str, generate_sql: bool) -> None:
    """The same measurement for every adapter, on one load of the base model: one JSON line per run."""
    from peft import PeftModel

    from tunewise.model.load import load_model

    model = load_model(source, "bfloat16", quant, "cuda" if on_gpu() else "cpu")
    for run in runs:
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(root / run / "adapter"), adapter_name=run)
                model.set_adapter(run)
            else:
                model = PeftModel.from_pretrained(model, str(root / run / "adapter"), adapter_name=run)
            scores = evaluate(model, source, generate_sql)
        except Exception as e:  # noqa: BLE001  (one adapter that cannot be scored leaves the others' scores)
            scores = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps({"run": run, **scores}), flush=True)


def evaluate(model, source: str, generate_sql: bool) -> dict:
    """Val loss on assistant tokens and, when asked, sql_exec on the test split's questions."""
    from tunewise.data.load import load_examples
    from tunewise.data.masking import encode_all
    from tunewise.evaluate.generate import generate, prompt_messages
    from tunewise.evaluate.metrics import sql_exec
    from tunewise.model.load import load_tokenizer
    from tunewise.train.loop import evaluate as val_loss

    device = "cuda" if on_gpu() else "cpu"
    tokenizer = load_tokenizer(source)
    val, _ = encode_all(tokenizer, load_examples(SQL / "val.jsonl"), 2048, "val")
    loss = val_loss(model, val, tokenizer.pad_token_id, device)
    if not generate_sql:
        return {"val_loss": loss, "sql_exec": float("nan")}
    test = load_examples(SQL / "test.jsonl")
    outputs = generate(model, tokenizer, [prompt_messages(e.messages) for e in test], 128, 16)
    score = sum(sql_exec(o, e.messages[-1]["content"], e.meta) for o, e in zip(outputs, test)) / len(test)
    return {"val_loss": loss, "sql_exec": score}


def child(args) -> None:
    out = Path(args.out)
    if args.child in GPU_ONLY and not on_gpu():
        # said in one line and recorded in the table; the other runs go on
        sys.exit(f"({args.child}) not run: {GPU_ONLY[args.child]} needs a CUDA GPU and none is visible")
    if args.child == "eval":
        evaluate_all(out, args.runs.split(","), args.quant, args.model_dir, args.generate_sql)
    elif args.child == "c":
        run_tunewise(Path(args.train), out, args.quant, args.model_dir)
    elif args.child == "d":
        run_unsloth(Path(args.train), out, args.quant, args.model_dir)
    else:
        run_trl(args.child, Path(args.train), out, args.quant, args.model_dir)


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


def run_child(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, int, str, str, int]:
    """Wall seconds, peak RSS bytes (of the child alone, from wait4), stdout, stderr, exit code.

    The child's output goes to files, not pipes: reading one pipe to its end while the child fills
    the other (progress bars, per-step warnings) deadlocks both processes."""
    start = time.perf_counter()
    with open(log.with_suffix(".out"), "w+") as out, open(log.with_suffix(".err"), "w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        return (time.perf_counter() - start, usage.ru_maxrss * 1024, out.read(), err.read(),
                os.waitstatus_to_exitcode(status))


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quant", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--only", default="a,b,c", help="runs in order, from a,b,c,d,e")
    parser.add_argument("--model", default="smollm2", choices=["smollm2", *RANDOM_SHAPES])
    parser.add_argument("--tokenizer", help="tokenizer directory for a random model (default: the bundled model's)")
    parser.add_argument("--unsloth-path", help="PYTHONPATH of (d)'s process (Unsloth's own package versions)")
    parser.add_argument("--workdir", help="where runs and logs go (default: a new temporary directory)")
    parser.add_argument("--child")
    parser.add_argument("--out")
    parser.add_argument("--train")
    parser.add_argument("--model-dir")
    parser.add_argument("--generate-sql", action="store_true")
    parser.add_argument("--runs", help="the evaluator's runs, e.g. c-0,b-0")
    return parser.parse_args()


def run_variant(v: str, r: int, root: Path, train: Path, args, source: str) -> dict:
    """One training process; a failure is a row that says why."""
    out = root / f"{v}-{r}"
    out.mkdir()
    common = ["--out", str(out), "--quant", args.quant, "--model-dir", source]
    env = None
    if v == "d" and args.unsloth_path:
        env = {**os.environ, "PYTHONPATH": args.unsloth_path}
    wall, rss, _, err, code = run_child([sys.executable, __file__, "--child", v, "--train", str(train), *common],
                                        out / "train", env)
    row = {"run": v, "round": r, "wall": wall, "rss": rss}
    if code:
        reason = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
        if err.strip() != reason:  # the tail of a traceback; a one-line refusal is printed once, below
            print(err[-3000:], flush=True)
        return row | {"failed": reason[:160]}
    result = json.loads((out / "result.json").read_text())
    return row | {"seconds": result["train_seconds"], "gpu": result.get("gpu_peak"),
                  "steady": steady_seconds(result["step_times"]), "val_loss": math.nan, "sql_exec": math.nan}


def score(rows: list[dict], root: Path, args, source: str) -> None:
    """One evaluator process for every trained adapter; its scores go into the rows."""
    trained = {f"{row['run']}-{row['round']}": row for row in rows if "failed" not in row}
    if not trained:
        return
    generate = ["--generate-sql"] if args.model == "smollm2" else []
    _, _, ev, err, code = run_child([sys.executable, __file__, "--child", "eval", "--out", str(root), "--quant",
                                     args.quant, "--model-dir", source, "--runs", ",".join(trained), *generate],
                                    root / "eval")
    if code:
        print(f"evaluation failed:\n{err[-3000:]}", flush=True)
    for line in ev.splitlines():
        if line.startswith('{"run"'):
            scores = json.loads(line)
            if "error" in scores:
                print(f"({scores['run']}) evaluation failed: {scores['error']}", flush=True)
            else:
                print(f"({scores['run']}) val loss {scores['val_loss']:.4f}, sql_exec {pct(scores['sql_exec'])}",
                      flush=True)
            trained[scores.pop("run")].update({k: v for k, v in scores.items() if k != "error"})


def steady_seconds(times: list[float]) -> tuple[float, float] | None:
    """(seconds from the end of step STEADY_FROM to the last step's, the fraction of steps in them); None when
    the run had too few steps. Tokens per step are taken as equal (the steps draw shuffled examples)."""
    if len(times) < STEADY_FROM + 2:
        return None
    return times[-1] - times[STEADY_FROM - 1], (len(times) - STEADY_FROM) / len(times)


def rates(row: dict, tokens: int) -> tuple[float, str]:
    """Trained tokens/s over the whole train() call, and over the steady steps (text, "n/a" if too few)."""
    steady = row["steady"]
    text = f"{tokens * steady[1] / steady[0]:.1f}" if steady and steady[0] > 0 else "n/a"
    return tokens / row["seconds"], text


def pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def print_row(row: dict, tokens: int) -> None:
    if "failed" in row:
        print(f"({row['run']}) round {row['round']}: failed after {row['wall']:.0f}s: {row['failed']}", flush=True)
        return
    gpu = f", peak GPU {row['gpu'] / 2**20:.0f} MiB" if row["gpu"] is not None else ""
    overall, steady = rates(row, tokens)
    print(f"({row['run']}) round {row['round']}: wall {row['wall']:.0f}s, train {row['seconds']:.1f}s, "
          f"{overall:.1f} trained tok/s ({steady} after step {STEADY_FROM}), peak RSS {row['rss'] / 2**20:.0f} MiB"
          f"{gpu}", flush=True)


def print_table(rows: list[dict], tokens: int, flops: float, peak: float) -> None:
    gpu = on_gpu()
    print(f"| run | round | wall s | train s | trained tok/s | steady tok/s | MFU | peak RSS MiB |"
          f"{' peak GPU MiB |' if gpu else ''} val loss | sql_exec |")
    print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "") + "---|---|")
    for row in rows:
        if "failed" in row:
            print(f"| ({row['run']}) | {row['round']} | {row['wall']:.0f} | failed: {row['failed']} |")
            continue
        gpu_cell = f" {row['gpu'] / 2**20:.0f} |" if row["gpu"] is not None else ""
        overall, steady = rates(row, tokens)
        print(f"| ({row['run']}) | {row['round']} | {row['wall']:.0f} | {row['seconds']:.1f} | {overall:.1f} | "
              f"{steady} | {flops / row['seconds'] / peak:.2%} | {row['rss'] / 2**20:.0f} |"
              f"{gpu_cell} {row['val_loss']:.4f} | {pct(row['sql_exec'])} |")
    print(f"MFU is over the whole train s; steady tok/s leaves out the first {STEADY_FROM} optimizer steps "
          "(warm-up, kernel compilation) and counts the rest's share of the tokens.")
    for v in dict.fromkeys(row["run"] for row in rows):
        print(f"- ({v}) {NOTES[v]}")


def main() -> None:
    args = parse_args()
    if args.child:
        return child(args)
    from tunewise.data.load import load_examples
    from tunewise.data.masking import encode_all
    from tunewise.model.load import load_tokenizer

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tunewise-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    args.workdir = str(root)
    print(f"runs, adapters and each child's output: {root}", flush=True)
    start = time.perf_counter()
    source = model_dir(args)
    print(f"model: {source} ({time.perf_counter() - start:.0f}s)", flush=True)
    train = subset(args.examples, root)
    enc, stats = encode_all(load_tokenizer(source), load_examples(train), 2048, "train")
    variants = args.only.split(",")
    rows = []
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            rows.append(run_variant(v, r, root, train, args, source))
            print_row(rows[-1], stats.trained_tokens)
    score(rows, root, args, source)
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from matmul_peak import measure

    peak = max(measure().values()) * 1e9
    flops = training_flops(source, enc)
    where = f"GPU {torch.cuda.get_device_name()}" if on_gpu() else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.examples} examples, {stats.trained_tokens} assistant tokens, {stats.total_tokens} tokens, "
          f"model={args.model}, quant={args.quant}; {flops / 1e12:.2f} TFLOP of useful work; {where}, "
          f"torch {torch.__version__}; measured bf16 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print_table(rows, stats.trained_tokens, flops, peak)


if __name__ == "__main__":
    main()
