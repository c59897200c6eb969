"""Evaluation JSON contract, HTML escaping, loss plot, merge parity: on a tiny trained run."""

import json
from html.parser import HTMLParser

import pytest
import torch

from tunewise.config import Config
from tunewise.evaluate.compare import compare
from tunewise.evaluate.report import render_html
from tunewise.export.merge import merge
from tunewise.train.curves import plot_losses
from tunewise.train.guards import overfit_start
from tunewise.train.loop import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir, sql_example, write_jsonl):
    root = tmp_path_factory.mktemp("run")
    tr = write_jsonl(root / "train.jsonl", [sql_example(i) for i in range(16)])
    va = write_jsonl(root / "val.jsonl", [sql_example(50 + i) for i in range(4)])
    cfg = Config.model_validate({
        "model": {"name": str(tiny_model_dir), "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(tr), "val": str(va), "max_seq_len": 128, "allow_small": True},
        "train": {"batch_size": 4, "max_steps": 4, "eval_every": 2, "save_every": 2, "lr": 1e-2},
        "output_dir": str(root / "run"),
    })
    train(cfg)
    return root / "run", va


def test_eval_json_contract(tiny_run, monkeypatch):
    from tunewise.evaluate import compare as compare_module
    from tunewise.evaluate.metrics import get_metric

    seen = []
    real_generate = compare_module.generate

    def spy(model, tokenizer, conversations, *args, **kwargs):
        seen.append([[dict(m) for m in c] for c in conversations])
        return real_generate(model, tokenizer, conversations, *args, **kwargs)

    monkeypatch.setattr(compare_module, "generate", spy)
    run, val = tiny_run
    result = compare(run, val, "exact_match", max_new_tokens=8)
    assert result["metric"] == "exact_match" and result["n"] == 4
    assert len(seen) == 2 and seen[0] == seen[1]  # base and tuned saw the same prompts
    assert all(c[-1]["role"] == "user" for c in seen[0])  # ... each ending before the reference answer
    assert [c[-1]["content"] for c in seen[0]] == [r["prompt"] for r in result["examples"]]
    from tunewise.data.load import load_examples

    for example, row, conversation in zip(load_examples(val), result["examples"], seen[0]):
        assert conversation == [{k: m[k] for k in ("role", "content")} for m in example.messages[:-1]]
        assert row["reference"] == example.messages[-1]["content"]  # each answer scored against its own question
    metric = get_metric("exact_match")
    assert len(result["examples"]) == 4
    for row in result["examples"]:
        assert {"prompt", "reference", "base", "tuned", "base_ok", "tuned_ok"} <= row.keys()
        assert row["reference"].startswith("SELECT") and row["prompt"].startswith("Rows of table")
        assert row["base_ok"] == metric(row["base"], row["reference"], {})  # scores follow the metric
        assert row["tuned_ok"] == metric(row["tuned"], row["reference"], {})
    for key in ("base", "tuned"):
        assert result[key]["score"] == sum(r[f"{key}_ok"] for r in result["examples"]) / 4
    json.dumps(result)  # serialisable as is
    # the tuned model's adapter is really applied: a random tiny model's outputs differ with it
    assert any(r["base"] != r["tuned"] for r in result["examples"])


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_escapes_data_text():
    hostile = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    result = {"metric": "sql_exec<b>", "n": 1, "data": "<i>d</i>", "base": {"score": 0.0}, "tuned": {"score": 1.0},
              "examples": [{"prompt": hostile, "reference": hostile, "base": hostile, "tuned": "&amp;",
                            "base_ok": 0.0, "tuned_ok": 1.0}]}
    parser = _Collect()
    parser.feed(render_html(result))
    assert "script" not in parser.tags and "img" not in parser.tags and "b" not in parser.tags
    assert hostile in "".join(parser.text)  # shown as text, intact
    assert "&amp;" in "".join(parser.text)


def test_loss_plot_and_overfit_region(tiny_run, tmp_path):
    run, _ = tiny_run
    assert (run / "report" / "loss.png").stat().st_size > 1000
    train_events = [{"step": s, "loss": 2.0 - 0.1 * s} for s in range(1, 11)]
    evals = [{"step": 2, "val_loss": 1.5}, {"step": 4, "val_loss": 1.2}, {"step": 6, "val_loss": 1.3},
             {"step": 8, "val_loss": 1.5}]
    assert overfit_start(train_events, evals) == 4
    assert overfit_start(train_events, evals[:2]) is None
    noise = evals[:2] + [{"step": 6, "val_loss": 1.205}]  # +0.4%: noise, not overfitting
    assert overfit_start(train_events, noise) is None
    assert overfit_start(train_events, evals[:3]) is None  # one evaluation up: not yet a trend
    bump = evals[:3] + [{"step": 8, "val_loss": 1.205}]  # up once, then back within 1% of the best
    assert overfit_start(train_events, bump) is None  # (seen on the SQL example: the bump recovered)
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("".join(json.dumps({"event": "train", **e}) + "\n" for e in train_events)
                       + "".join(json.dumps({"event": "eval", **e}) + "\n" for e in evals))
    assert plot_losses(metrics, tmp_path / "loss.png").stat().st_size > 1000


def test_merge_parity_and_plain_loading(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunewise.evaluate.compare import load_tuned

    run, _ = tiny_run
    parity = merge(run, tmp_path / "merged")
    assert parity.ok and parity.max_abs_diff < 1e-3
    assert (run / "adapter" / "adapter_model.safetensors").is_file()  # the adapter is kept
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    tuned, tokenizer, _ = load_tuned(run)
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, tuned(input_ids=ids).logits, atol=1e-3, rtol=1e-3)
        with tuned.disable_adapter():
            assert (tuned(input_ids=ids).logits - merged(ids).logits).abs().max() > 1e-3
    assert (tmp_path / "merged" / "chat_template.jinja").is_file() or "chat_template" in \
        (tmp_path / "merged" / "tokenizer_config.json").read_text()
    from tunewise.errors import TunewiseError

    with pytest.raises(TunewiseError, match="not empty"):
        merge(run, tmp_path / "merged")
