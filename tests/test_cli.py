"""The command line as a user meets it: the real bundled model end to end, and clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TUNEWISE = [sys.executable, "-m", "tunewise.cli"]


def run(args, cwd):
    return subprocess.run(TUNEWISE + args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_train_bundled_model_end_to_end(sql_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tmp_path / "config.yaml"
    config.write_text(
        "model: {name: smollm2-135m-instruct}\n"
        "lora: {r: 8, alpha: 16}\n"
        "data: {train: train.jsonl, val: val.jsonl, max_seq_len: 256, allow_small: true}\n"
        "train: {batch_size: 4, eval_every: 2, save_every: 2}\n"
        "output_dir: runs/e2e\n"
    )
    proc = run(["train", "config.yaml", "train.max_steps=3", "train.lr=1e-3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "trained" in proc.stdout and "adapter" in proc.stdout
    run_dir = tmp_path / "runs/e2e"
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3]
    assert (run_dir / "checkpoints/step-3/training_state.pt").is_file()

    adapter = run_dir / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base_path).is_dir()  # the cached safetensors copy of the bundled model
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Rows of table t3?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        before = base(**ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter))
        after = tuned(**ids).logits
    assert (after - before).abs().max() > 1e-3

    # the evidence commands on the same run: eval (JSON + HTML), merge, chat
    proc = run(["eval", "--run", "runs/e2e", "--data", "val.jsonl", "--metric", "exact_match",
                "--json", "eval.json", "--html", "report.html", "--max-new-tokens", "24", "--probes", "16"],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n"] == 6 and len(result["examples"]) == 6 and "base" in proc.stdout
    assert result["forgetting"]["probes"] == 16 and result["forgetting"]["tokens"] > 100  # on by default
    assert "KL(base || tuned)" in proc.stdout and "<h2>Forgetting</h2>" in (tmp_path / "report.html").read_text()
    assert "data:image/png;base64" in (tmp_path / "report.html").read_text()  # loss curve embedded
    proc = run(["merge", "runs/e2e", "--out", "merged"], cwd=tmp_path)
    assert proc.returncode == 0 and "top-1 agreement 100.0%" in proc.stdout, proc.stdout + proc.stderr
    assert AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).dtype == torch.bfloat16
    proc = run(["chat", "runs/e2e", "--prompt", "Rows of table t3 with id above 3?", "--max-new-tokens", "24"],
               cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr


def test_user_errors_are_one_clear_message(tmp_path):
    proc = run(["train", "missing.yaml"], cwd=tmp_path)
    assert proc.returncode == 1 and "config file not found: missing.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr

    (tmp_path / "c.yaml").write_text("data: {train: t.jsonl}\nlora: {rank: 8}\n")
    proc = run(["train", "c.yaml"], cwd=tmp_path)
    assert proc.returncode == 1 and "unknown key 'lora.rank'" in proc.stderr

    (tmp_path / "t.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / "c.yaml").write_text("data: {train: t.jsonl}\nmodel: {name: no-such-model}\n")
    proc = run(["train", "c.yaml"], cwd=tmp_path)
    assert proc.returncode == 1 and "model 'no-such-model' not found" in proc.stderr

    (tmp_path / "t.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                      '{"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]}\n')
    (tmp_path / "c.yaml").write_text("data: {train: t.jsonl}\n")
    proc = run(["train", "c.yaml"], cwd=tmp_path)
    assert proc.returncode == 1 and "t.jsonl:1" in proc.stderr and "last message" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = run(["train", "c.yaml", "--from", "no-such-run"], cwd=tmp_path)
    assert proc.returncode == 1 and "lora.init_from=no-such-run: neither a run directory" in proc.stderr
    (tmp_path / "c.yaml").write_text("data: {train: t.jsonl, replay: {fraction: 0.9}}\n")
    proc = run(["train", "c.yaml"], cwd=tmp_path)
    assert proc.returncode == 1 and "data.replay.fraction" in proc.stderr and "Traceback" not in proc.stderr


def test_advise_follows_the_guide(tmp_path):
    proc = run(["advise", "--problem", "format", "--examples", "300", "--tried-prompting"], cwd=tmp_path)
    assert proc.returncode == 0 and "Recommendation: fine-tune" in proc.stdout
    proc = run(["advise", "--problem", "format", "--examples", "30", "--tried-prompting"], cwd=tmp_path)
    assert "few-shot" in proc.stdout
    proc = run(["advise", "--problem", "knowledge", "--examples", "1000", "--tried-prompting"], cwd=tmp_path)
    assert "RAG" in proc.stdout
    proc = run(["advise", "--problem", "domain", "--examples", "1000", "--not-tried-prompting"], cwd=tmp_path)
    assert "improve the prompt" in proc.stdout
    proc = run(["advise", "--problem", "vibes", "--examples", "1", "--tried-prompting"], cwd=tmp_path)
    assert proc.returncode == 1 and "--problem 'vibes'" in proc.stderr
    proc = subprocess.run(TUNEWISE + ["advise"], cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "not a terminal" in proc.stderr


def test_data_split_keeps_the_input(tmp_path, sql_example, write_jsonl):
    src = write_jsonl(tmp_path / "all.jsonl", [sql_example(i) for i in range(100)])
    before = src.read_bytes()
    proc = run(["data", "split", "all.jsonl", "--val-fraction", "0.1", "--test-fraction", "0.2", "--out", "split"],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sizes = {p: len((tmp_path / "split" / f"{p}.jsonl").read_text().splitlines()) for p in ("train", "val", "test")}
    assert sizes == {"train": 70, "val": 10, "test": 20} and src.read_bytes() == before
    lines = set()
    for p in sizes:
        lines |= set((tmp_path / "split" / f"{p}.jsonl").read_text().splitlines())
    assert lines == set(before.decode().splitlines())


def test_data_check_shows_what_replay_would_mix_in(tmp_path, sql_example, write_jsonl):
    write_jsonl(tmp_path / "new.jsonl", [sql_example(i) for i in range(95)])
    write_jsonl(tmp_path / "old.jsonl", [sql_example(500 + i) for i in range(60)] + [{"messages": []}])
    proc = run(["data", "check", "new.jsonl", "--replay", "old.jsonl", "--replay-fraction", "0.05", "--json"],
               cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert report["replay"]["examples"] == 5  # round(95 * 0.05 / 0.95)
    assert report["replay"]["report"]["errors"] == 1 and proc.returncode == 1  # the replay file is checked too
