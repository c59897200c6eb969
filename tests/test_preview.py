"""`tunewise data preview`: the contract's JSON, the terminal view, and refusals with exit 1."""

import json
import subprocess
import sys

from tunewise.data.preview import preview
from tunewise.data.targets import target_options

TUNEWISE = [sys.executable, "-m", "tunewise.cli"]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_json_is_the_contract_and_refusals_exit_1(tmp_path, smol_dir, chatml_tokenizer, conversations,
                                                       with_reasoning):
    rows = [{"messages": conversations["system+2"]}, {"prompt": "Say hi", "completion": "hi"},
            {"messages": with_reasoning["reasoning_content"]}]  # ChatML drops reasoning: refused
    data = write(tmp_path / "d.jsonl", rows)
    proc = subprocess.run(TUNEWISE + ["data", "preview", str(data), "--model", str(smol_dir), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    examples = json.loads(proc.stdout)["examples"]
    assert [e["line"] for e in examples] == [1, 2, 3]
    (seq,) = examples[0]["sequences"]
    text = "".join(s["text"] for s in seq["segments"])
    assert text == chatml_tokenizer.apply_chat_template(conversations["system+2"], tokenize=False).rstrip()
    assert [s["text"] for s in seq["segments"] if s["trained"]] == ["ANSWER alpha<|im_end|>", "ANSWER beta<|im_end|>"]
    assert examples[2]["error"]["code"] == "reasoning-dropped" and "d.jsonl:3" in examples[2]["error"]["message"]

    ok = write(tmp_path / "ok.jsonl", rows[:2])
    proc = subprocess.run(TUNEWISE + ["data", "preview", str(ok), "--model", str(smol_dir), "--line", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "line 2: 1 sequence" in proc.stdout and "line 1" not in proc.stdout
    assert "⟦hi<|im_end|>⟧" in proc.stdout  # no terminal: trained text marked, not coloured


def test_preview_of_a_reasoning_template_shows_one_sequence_per_turn(chatml_tokenizer, tmp_path, family_tokenizer,
                                                                    with_reasoning):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "qwen3-strips-past-reasoning")
    data = write(tmp_path / "r.jsonl", [{"messages": with_reasoning["reasoning_content"]}])
    (item,) = preview(data, tok, options)
    first, second = item["sequences"]
    assert [s["trained"] for s in first["segments"]] == [False, True]
    assert first["segments"][1]["text"] == "<think>\nREASONING first\n</think>\n\nANSWER alpha<|im_end|>"
    # the second turn's history is rendered as at inference: the first turn's reasoning stripped
    assert "REASONING first" not in second["segments"][0]["text"]
    assert second["segments"][1]["text"].startswith("<think>\nREASONING second\n</think>")


def test_preview_and_training_tokenize_the_same_text(chatml_tokenizer, conversations):
    from tunewise.data.load import to_example
    from tunewise.data.masking import encode

    example = to_example({"messages": conversations["system+2"]})
    options = target_options(chatml_tokenizer)
    (enc,) = encode(chatml_tokenizer, example, 4096, "", options)
    (seq,) = next(iter(preview_rows(chatml_tokenizer, example, options)))
    assert chatml_tokenizer.decode(enc.input_ids) == "".join(s["text"] for s in seq["segments"])


def preview_rows(tokenizer, example, options):
    from tunewise.data.targets import build_sequences

    yield [s.to_json() for s in build_sequences(tokenizer, example, options)]

