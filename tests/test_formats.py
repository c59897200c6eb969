"""Data as users have it: Alpaca, ShareGPT, JSON arrays, parquet, datasets save_to_disk; the same tokens
as tunewise's own JSONL, and every broken record refused with its file, line or row, and key."""

import json
import subprocess
import sys

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from tunewise.config import Config
from tunewise.data.doctor import check
from tunewise.data.formats import DataSpec
from tunewise.data.load import DataError, load_examples
from tunewise.data.split import split_file
from tunewise.errors import TunewiseError
from tunewise.train import loop
from tunewise.train.setup import prepare_data

TUNEWISE = [sys.executable, "-m", "tunewise.cli"]
SYSTEM = "You are a SQL expert."


def conversation(i: int) -> tuple[str, str, str]:
    """(instruction, input, output); half have an input, which Alpaca joins to the instruction with a newline."""
    return f"Rows of table t{i} with id above {i}?", ("Schema: t(id)" if i % 2 else ""), f"SELECT * FROM t{i};"


def as_messages(i: int) -> dict:
    instruction, extra, output = conversation(i)
    user = f"{instruction}\n{extra}" if extra else instruction
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
                         {"role": "assistant", "content": output}]}


def as_alpaca(i: int) -> dict:
    instruction, extra, output = conversation(i)
    return {"instruction": instruction, "input": extra, "output": output, "system": SYSTEM}


def as_sharegpt(i: int, human="human", gpt="gpt") -> dict:
    m = as_messages(i)["messages"]
    return {"conversations": [{"from": "system", "value": m[0]["content"]}, {"from": human, "value": m[1]["content"]},
                              {"from": gpt, "value": m[2]["content"]}]}


def json_array(path, rows):
    """One element a line after the opening bracket: element i starts on line i + 2."""
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n", encoding="utf-8")
    return path


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


N = 24


def sources(tmp_path) -> dict:
    """The same N conversations in every shape: (path, data section extras)."""
    messages = [as_messages(i) for i in range(N)]
    # parquet: one message carries weight 1 (the default), so the struct column is null in every other row
    weighted = [json.loads(json.dumps(m)) for m in messages]
    weighted[0]["messages"][2]["weight"] = 1
    pq.write_table(pa.Table.from_pylist(weighted), tmp_path / "m.parquet")
    # save_to_disk: ShareGPT under other names, read through data.columns and data.roles
    odd = [{"dialog": [{"speaker": t["from"], "text": t["value"]} for t in as_sharegpt(i, "person", "bot")
                       ["conversations"]]} for i in range(N)]
    datasets.Dataset.from_list(odd).save_to_disk(str(tmp_path / "saved"))
    return {
        "messages": (jsonl(tmp_path / "m.jsonl", messages), {}),
        "alpaca": (json_array(tmp_path / "a.json", [as_alpaca(i) for i in range(N)]), {}),
        "sharegpt": (jsonl(tmp_path / "s.jsonl", [as_sharegpt(i) for i in range(N)]), {}),
        "parquet": (tmp_path / "m.parquet", {}),
        "saved": (tmp_path / "saved", {"format": "sharegpt", "columns": {"conversations": "dialog", "from": "speaker",
                                                                           "value": "text"},
                                       "roles": {"person": "user", "bot": "assistant"}}),
    }


def config(model_dir, data, extra, out) -> Config:
    return Config.model_validate({
        "model": {"name": str(model_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"train": str(data), "val_fraction": 0.25, "max_seq_len": 256, "allow_small": True, **extra},
        "train": {"epochs": 1, "batch_size": 4, "eval_every": 2, "save_every": 2, "max_steps": 2, "lr": 5e-3,
                  "early_stopping_patience": None},
        "output_dir": str(out)})


def tokens(cfg, tokenizer):
    data = prepare_data(cfg, tokenizer)
    return [[(x.input_ids, x.labels) for x in part] for part in (data.train, data.val)]


def test_every_shape_trains_the_same_tokens_and_adapter(tiny_model_dir, chatml_tokenizer, tmp_path):
    shapes = sources(tmp_path)
    reference_cfg = config(tiny_model_dir, *shapes.pop("messages"), tmp_path / "run-messages")
    reference = tokens(reference_cfg, chatml_tokenizer)
    loop.train(reference_cfg, device="cpu")
    reference_adapter = load_file(tmp_path / "run-messages" / "adapter" / "adapter_model.safetensors")
    for name, (path, extra) in shapes.items():
        cfg = config(tiny_model_dir, path, extra, tmp_path / f"run-{name}")
        assert tokens(cfg, chatml_tokenizer) == reference, name
        result = loop.train(cfg, device="cpu")
        assert result.steps == 2
        adapter = load_file(tmp_path / f"run-{name}" / "adapter" / "adapter_model.safetensors")
        assert adapter.keys() == reference_adapter.keys()
        assert all((adapter[k] == reference_adapter[k]).all() for k in adapter), name  # trained the same, bit for bit


def broken(tmp_path) -> dict:
    """A broken record in each format: (path, spec, where the error must point, words it must name)."""
    alpaca = [as_alpaca(i) for i in range(N)]
    del alpaca[5]["output"]
    sharegpt = [as_sharegpt(i) for i in range(N)]
    sharegpt[7]["conversations"][2]["from"] = "bot"
    rows = [as_messages(i) for i in range(N)]
    rows[3]["messages"][1] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "null.parquet")
    pq.write_table(pa.Table.from_pylist([as_messages(i) for i in range(N)]), tmp_path / "ok.parquet")
    saved = [as_sharegpt(i) for i in range(N)]
    saved[2]["conversations"][1]["value"] = None
    datasets.Dataset.from_list(saved).save_to_disk(str(tmp_path / "saved"))
    return {
        "alpaca missing output": (json_array(tmp_path / "a.json", alpaca), DataSpec(), "a.json:7", ["'output'"]),
        "sharegpt unknown from": (jsonl(tmp_path / "s.jsonl", sharegpt), DataSpec(), "s.jsonl:8",
                                  ["conversations[2]", "'bot'", "data.roles"]),
        "parquet null turn": (tmp_path / "null.parquet", DataSpec(), "null.parquet row 3", ["messages[1] is null"]),
        "missing column": (tmp_path / "ok.parquet", DataSpec(columns={"messages": "conversation"}), "ok.parquet row 0",
                           ["'conversation'", "data.columns.messages"]),
        "saved null value": (tmp_path / "saved", DataSpec(), "saved row 2", ["conversations[1]", "'value'", "null"]),
    }


def test_broken_records_are_refused_with_file_place_and_key(tmp_path):
    for name, (path, spec, place, words) in broken(tmp_path).items():
        with pytest.raises(DataError) as refused:
            load_examples(path, spec)
        message = str(refused.value)
        assert message.startswith(f"{tmp_path}/{place}: "), (name, message)
        assert all(w in message for w in words), (name, message)
        report = check(path, allow_small=True, spec=spec)  # the doctor says the same, and counts
        errors = [f"{f.where()}{f.message}" for f in report.findings if f.level == "error"]
        assert errors[0] == message, name
        assert report.errors == (N + 1 if name == "missing column" else 1), name  # every row, then "no valid examples"


def test_train_refuses_a_broken_row_before_loading_the_model(tiny_model_dir, tmp_path):
    path, _, place, _ = broken(tmp_path)["parquet null turn"]
    with pytest.raises(TunewiseError, match=rf"{place}: messages\[1\] is null"):
        loop.train(config(tiny_model_dir, path, {}, tmp_path / "run"), device="cpu")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_json_array_lines_and_detection(tmp_path):
    path = json_array(tmp_path / "a.json", [as_alpaca(i) for i in range(3)])
    assert [e.line for e in load_examples(path)] == [2, 3, 4]
    report = check(path, allow_small=True)
    assert report.stats["format"][str(path)]["described"] == f"{path}: format alpaca (detected from line 2)"
    path.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"}\n]')
    with pytest.raises(DataError, match=r"a\.json:3: invalid JSON"):
        load_examples(path)
    path.write_text('[{"instruction": "a", "output": "b"}] x')
    with pytest.raises(DataError, match=r"a\.json:1: invalid JSON array: text after its closing"):
        load_examples(path)
    unknown = jsonl(tmp_path / "u.jsonl", [{"text": "hi"}])
    with pytest.raises(DataError, match=r"u\.jsonl:1: cannot tell the data format from this record's keys \('text'\)"):
        load_examples(unknown)


def test_cli_check_says_the_format_first_and_convert_writes_messages(tmp_path):
    alpaca = json_array(tmp_path / "a.json", [as_alpaca(i) for i in range(N)])
    proc = subprocess.run(TUNEWISE + ["data", "check", str(alpaca), "--allow-small"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"{alpaca}: format alpaca (detected from line 2)"
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(TUNEWISE + ["data", "convert", str(alpaca), "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == [as_messages(i) for i in range(N)]
    bad = broken(tmp_path)["sharegpt unknown from"][0]
    proc = subprocess.run(TUNEWISE + ["data", "convert", str(bad), "--out", str(tmp_path / "x.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "s.jsonl:8: conversations[2]: unknown from 'bot'" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.jsonl").exists()
    proc = subprocess.run(TUNEWISE + ["data", "check", str(bad), "--role", "bot=assistant", "--allow-small"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout  # the mapping makes it readable


def test_split_of_parquet_writes_tunewise_jsonl(tmp_path):
    pq.write_table(pa.Table.from_pylist([as_messages(i) for i in range(N)]), tmp_path / "m.parquet")
    counts = split_file(tmp_path / "m.parquet", 0.25, 0.0, 0, tmp_path / "split")
    assert counts == {"val": 6, "train": 18}
    rows = [json.loads(line) for name in ("train", "val") for line in (tmp_path / "split" / f"{name}.jsonl").open()]
    assert sorted(r["messages"][1]["content"] for r in rows) == sorted(
        m["messages"][1]["content"] for m in (as_messages(i) for i in range(N)))
    with pytest.raises(TunewiseError, match="inside the input directory"):
        datasets.Dataset.from_list([as_messages(i) for i in range(N)]).save_to_disk(str(tmp_path / "saved"))
        split_file(tmp_path / "saved", 0.25, 0.0, 0, tmp_path / "saved")


def test_a_mapping_to_nothing_is_refused_naming_the_key():
    with pytest.raises(TunewiseError, match=r"data\.columns: 'conversation' is not a field of any format"):
        DataSpec(columns={"conversation": "dialog"})  # the field is `conversations` (or messages)
    with pytest.raises(TunewiseError, match=r"data\.columns: 'conversations' is not a field of alpaca data"):
        DataSpec("alpaca", columns={"conversations": "dialog"})
    with pytest.raises(TunewiseError, match=r"data\.roles\.bot: 'robot' is not a role tunewise knows"):
        DataSpec(roles={"bot": "robot"})
