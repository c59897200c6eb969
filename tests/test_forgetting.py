"""Living with a tuned model (issue 16): continue with --from, measure forgetting, replay.

On a tiny random Llama: a run trained on a narrow SQL set is the parent; a second narrow set
(greetings) is the new task.
"""

import json
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rich.console import Console
from safetensors.torch import load_file

from tunewise.config import Config
from tunewise.data.load import load_examples
from tunewise.data.masking import encode
from tunewise.data.probes import MEASURE_SIZE, base_key, measure_probes, replay_probes, write_answers
from tunewise.data.split import replay_count
from tunewise.data.targets import target_options
from tunewise.data.template import template_hash
from tunewise.errors import TunewiseError
from tunewise.evaluate import forgetting
from tunewise.evaluate.compare import compare, load_tuned
from tunewise.evaluate.report import render_html
from tunewise.model.load import load_model, load_tokenizer
from tunewise.model.lora import load_lora
from tunewise.train import loop, replay
from tunewise.train.replay import mix_replay
from tunewise.train.setup import prepare_data
from tunewise.train.warm_start import check_parent, find_parent


def greeting(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Greet guest number {i}."},
                         {"role": "assistant", "content": f"Hello guest {i}, welcome!"}]}


def config(model_dir, train, val, out, **extra) -> Config:
    raw = {"model": {"name": str(model_dir), "dtype": "float32"},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "data": {"train": str(train), "val": str(val) if val else None, "max_seq_len": 128, "allow_small": True},
           "train": {"batch_size": 4, "max_steps": 4, "eval_every": 2, "save_every": 2, "lr": 2e-2,
                     "early_stopping_patience": None},
           "output_dir": str(out)}
    for key, value in extra.items():
        section, name = key.split("__")
        raw[section][name] = value
    return Config.model_validate(raw)


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory, tiny_model_dir, sql_example, write_jsonl):
    """A run trained on a narrow SQL set (the earlier task), evaluated once so its task is recorded."""
    root = tmp_path_factory.mktemp("parent")
    train = write_jsonl(root / "train.jsonl", [sql_example(i) for i in range(16)])
    val = write_jsonl(root / "val.jsonl", [sql_example(50 + i) for i in range(4)])
    loop.train(config(tiny_model_dir, train, val, root / "run"))
    return root / "run", val


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def adapter_weights(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_from_loads_a_trainable_adapter_and_training_changes_it(parent_run, tiny_model_dir, write_jsonl, tmp_path):
    run, _ = parent_run
    model = load_lora(load_model(str(tiny_model_dir), "float32"), run / "adapter", config(
        tiny_model_dir, "x", None, "y").lora)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # PEFT's default would freeze them all
    saved = adapter_weights(run / "adapter")
    for key, value in saved.items():  # the run starts from the parent's weights, not from B = 0
        name = next(n for n in trainable if n.startswith(key.removesuffix(".weight")))
        assert torch.equal(trainable[name].detach(), value)

    train = write_jsonl(tmp_path / "greet.jsonl", [greeting(i) for i in range(16)])
    val = write_jsonl(tmp_path / "greet_val.jsonl", [greeting(100 + i) for i in range(4)])
    loop.train(config(tiny_model_dir, train, val, tmp_path / "child", lora__init_from=str(run), train__max_steps=2))
    child = adapter_weights(tmp_path / "child" / "adapter")
    assert child.keys() == saved.keys()
    assert any(not torch.equal(child[k], saved[k]) for k in saved)  # trained further
    manifest = json.loads((tmp_path / "child" / "manifest.json").read_text())
    assert manifest["parent"]["run"] == str(run.resolve())
    events = [json.loads(x) for x in (tmp_path / "child" / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["step"] == 1  # a new run: fresh optimizer and schedule, counted from the start


@pytest.mark.parametrize("key, value, message", [
    ("lora__r", 8, r"lora.r is 4 in the adapter and 8"),
    ("lora__alpha", 16, r"lora.alpha is 8"),
    ("lora__target_modules", ["q_proj"], r"lora.target_modules is 'all-linear'"),
])
def test_from_refuses_a_config_the_adapter_was_not_trained_under(parent_run, tiny_model_dir, tmp_path, key, value,
                                                                 message, monkeypatch):
    run, val = parent_run
    loaded = []
    monkeypatch.setattr("tunewise.train.session.load_model", lambda *a, **k: loaded.append(a))
    cfg = config(tiny_model_dir, val, val, tmp_path / "c", lora__init_from=str(run), **{key: value})
    with pytest.raises(TunewiseError, match=message):
        loop.train(cfg)
    assert loaded == []  # refused before any weight was read


def test_from_refuses_another_base_or_template(parent_run, tiny_model_dir, write_tiny_model, chatml_tokenizer,
                                               tmp_path):
    run, val = parent_run
    parent = find_parent(str(run / "adapter"))  # the run is found from its adapter directory too
    assert parent.run.path == run
    cfg = config(tiny_model_dir, val, val, tmp_path / "c")
    sha = parent.manifest["chat_template_sha256"]
    check_parent(parent, cfg, str(tiny_model_dir), sha)  # the same: accepted
    with pytest.raises(TunewiseError, match="chat template"):
        check_parent(parent, cfg, str(tiny_model_dir), "0" * 64)
    other = write_tiny_model(tmp_path / "other", chatml_tokenizer, seed=1)
    with pytest.raises(TunewiseError, match="model.name"):
        check_parent(parent, cfg, str(other), sha)


def test_kl_is_zero_for_the_base_against_itself_and_grows_with_narrow_training(parent_run, cache):
    run, _ = parent_run
    model, tokenizer, cfg = load_tuned(run, device="cpu")
    probes = measure_probes(12)
    answers, path = forgetting.base_answers(model, tokenizer, str(cfg.model.name), cfg, probes)
    assert path.parent == cache / "probe-answers" and path.is_file()
    # a random tiny model's greedy answers are mostly special tokens (decoded as ""): score real text
    answers = {p.id: f"Here is a short answer to: {p.prompt}" for p in probes}
    with model.disable_adapter():
        same = forgetting.drift(model, tokenizer, probes, answers)
    assert same["tokens"] > 100 and same["kl_per_token"] == pytest.approx(0, abs=1e-6)
    assert same["tuned_loss"] == pytest.approx(same["base_loss"], abs=1e-5)
    kls = []
    for step in (2, 4):  # the same run's adapter after 2 and after 4 steps on the narrow set
        model.load_adapter(str(run / "checkpoints" / f"step-{step}"), adapter_name=f"s{step}")
        model.set_adapter(f"s{step}")
        kls.append(forgetting.drift(model, tokenizer, probes, answers)["kl_per_token"])
    assert 1e-4 < kls[0] < kls[1], kls  # trained further on the narrow set: further from the base


def _textbook_drift(model, tokenizer, probe, answer) -> tuple[float, float, float, int]:
    """KL(base || tuned), summed, and both summed losses over the answer's tokens, one unpadded
    sequence, from the full logits: logits at position i predict token i + 1."""
    from tunewise.data.template import render

    prompt = tokenizer(render(tokenizer, probe.messages(), True), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer_ids])
    with torch.no_grad():
        tuned = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        with model.disable_adapter():
            base = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    rows = torch.arange(len(prompt) - 1, ids.shape[1] - 1)  # the positions that predict answer tokens
    picked = ids[0, rows + 1]
    kl = (base[rows].exp() * (base[rows] - tuned[rows])).sum()
    return float(kl), -float(base[rows, picked].sum()), -float(tuned[rows, picked].sum()), len(rows)


def test_kl_and_losses_are_the_textbook_ones_at_the_answer_positions(parent_run, cache):
    """The KL is base || tuned (not tuned || base) and is taken where the answer's tokens are
    predicted (not one position off): both would still give 0 for a model against itself."""
    run, _ = parent_run
    model, tokenizer, cfg = load_tuned(run, device="cpu")
    probes = measure_probes(5)
    answers = {p.id: f"Here is a short answer to: {p.prompt}" for p in probes}
    ours = forgetting.drift(model, tokenizer, probes, answers, batch_size=2)  # padded batches
    sums = [_textbook_drift(model, tokenizer, p, answers[p.id]) for p in probes]
    tokens = sum(s[3] for s in sums)
    assert ours["tokens"] == tokens
    assert ours["kl_per_token"] > 1e-3  # the trained adapter has moved: KL's direction shows
    assert ours["kl_per_token"] == pytest.approx(sum(s[0] for s in sums) / tokens, rel=1e-4)
    assert ours["base_loss"] == pytest.approx(sum(s[1] for s in sums) / tokens, rel=1e-5)
    assert ours["tuned_loss"] == pytest.approx(sum(s[2] for s in sums) / tokens, rel=1e-5)


def test_no_answer_tokens_give_no_verdict_and_say_why(parent_run, tiny_model_dir, cache):
    """All base answers empty used to print KL 0.0000 and "little forgetting"."""
    from tunewise.evaluate.forgetting_report import forgetting_html, forgetting_table

    run, _ = parent_run
    model, tokenizer, cfg = load_tuned(run, device="cpu")
    key = base_key(str(tiny_model_dir), template_hash(tokenizer), "none/float32")
    write_answers(key, str(tiny_model_dir), {p.id: " " * (i % 2) for i, p in enumerate(measure_probes(6))})
    result = forgetting.check_forgetting(model, tokenizer, str(tiny_model_dir), cfg, 6)
    assert result["tokens"] == 0 and result["kl_per_token"] is None and result["verdict"] is None
    assert "no verdict" in result["no_verdict"] and "all 6 probes are empty" in result["no_verdict"]
    console = Console(record=True, width=400)
    console.print(forgetting_table({"forgetting": result}))
    shown = console.export_text() + forgetting_html({"forgetting": result})
    assert "no verdict" in shown and "0 of 6 (6 empty base answers) / 0" in shown
    assert "little forgetting" not in shown and "0.0000" not in shown


def test_probe_answers_are_cached_per_base(tiny_model_dir, write_tiny_model, chatml_tokenizer, tmp_path, cache,
                                           monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    other = write_tiny_model(tmp_path / "other", chatml_tokenizer, seed=1)  # same shapes, other weights
    sha = "t" * 64
    assert base_key(str(tiny_model_dir), sha, "none/float32") == base_key(str(copy), sha, "none/float32")
    assert base_key(str(tiny_model_dir), sha, "none/float32") != base_key(str(other), sha, "none/float32")
    assert base_key(str(tiny_model_dir), sha, "none/float32") != base_key(str(tiny_model_dir), sha, "nf4/bfloat16")
    calls = []
    real = forgetting.generate
    monkeypatch.setattr(forgetting, "generate",
                        lambda m, t, convs, *a: calls.append(len(convs)) or real(m, t, convs, *a))
    cfg = config(tiny_model_dir, "x", None, "y")
    for directory in (tiny_model_dir, tiny_model_dir, other):
        model = get_peft_model(load_model(str(directory), "float32"), LoraConfig(r=2, target_modules=["q_proj"]))
        forgetting.base_answers(model, load_tokenizer(str(directory)), str(directory), cfg, measure_probes(5))
    assert calls == [5, 5]  # the second call on the same base generated nothing
    forgetting.base_answers(model, load_tokenizer(str(other)), str(other), cfg, measure_probes(8))
    assert calls == [5, 5, 3]  # more probes later: only the missing ones


def _shape(prompt: str) -> str:
    """A prompt up to its numbers and quoted words: "What is 76 + 29?" -> "what is # + #?"."""
    return re.sub(r"'[^']*'", "'_'", re.sub(r"\d+", "#", prompt.lower()))


def test_replay_probes_share_no_template_with_the_probes_that_measure():
    """33 of 158 replay probes were a measuring probe with other numbers ("What is 76 + 29?"):
    replaying the base's answers to them made forgetting read lower than it is."""
    measure, replay = measure_probes(MEASURE_SIZE), replay_probes()
    assert len(measure) == MEASURE_SIZE and len(replay) >= 100
    shared = {_shape(p.prompt) for p in measure} & {_shape(p.prompt) for p in replay}
    assert not shared, sorted(shared)[:5]
    for p in measure + replay:  # each prompt is an instance of the template it names ...
        slots = re.split(r"\{\w+\}", p.template)
        assert re.fullmatch(".+?".join(re.escape(part) for part in slots), p.prompt, re.S), p
    # ... and no template is on both sides, whatever fills its slots (countries, topics, sentences)
    assert not {p.template for p in measure} & {p.template for p in replay}
    assert {p.kind for p in measure[:forgetting.DEFAULT_PROBES]} == {p.kind for p in replay}  # a mix, both


def test_cached_answers_belong_to_one_probe_set(tiny_model_dir, tmp_path, monkeypatch):
    """Answers are cached by probe id; a changed probe set must not read the old set's answers."""
    from tunewise.data import probes

    key = base_key(str(tiny_model_dir), "t" * 64, "none/float32")
    changed = tmp_path / "general.jsonl"
    changed.write_text(probes.PROBES_FILE.read_text().replace("What is", "What's", 1))
    monkeypatch.setattr(probes, "PROBES_FILE", changed)
    assert base_key(str(tiny_model_dir), "t" * 64, "none/float32") != key


def test_replay_mixes_the_stated_fraction_seeded_and_never_into_validation(tiny_model_dir, chatml_tokenizer,
                                                                           write_jsonl, tmp_path):
    train = write_jsonl(tmp_path / "greet.jsonl", [greeting(i) for i in range(60)])
    pool = [greeting(1000 + i) for i in range(40)]
    cfg = config(tiny_model_dir, train, None, tmp_path / "r", data__val_fraction=0.2)
    base = prepare_data(cfg, chatml_tokenizer, str(tiny_model_dir))
    val_texts = {tuple(x.input_ids) for x in base.val}
    options = target_options(chatml_tokenizer, str(tiny_model_dir))
    val_rows = [json.loads(line) for line, example in zip(train.read_text().splitlines(), load_examples(train))
                if any(tuple(x.input_ids) in val_texts for x in encode(chatml_tokenizer, example, 128, "", options))]
    assert len(val_rows) == len(base.val) == 12
    # the old task's data is mostly the validation lines: a sample that did not leave them out would hold some
    source = write_jsonl(tmp_path / "old_task.jsonl", pool[:8] + val_rows)
    picks = {}
    for seed in (0, 0, 1):
        cfg_r = config(tiny_model_dir, train, None, tmp_path / "r", data__val_fraction=0.2,
                       data__replay={"fraction": 0.1, "source": str(source)}, train__seed=0)
        cfg_r.train.seed = seed  # the replay sample follows train.seed; the val split is kept the same here
        data = prepare_data(cfg, chatml_tokenizer, str(tiny_model_dir))
        mixed, record = mix_replay(cfg_r, data, None, chatml_tokenizer, str(tiny_model_dir), Console(quiet=True))
        added = mixed.train[len(data.train):]
        assert record["examples"] == len(added) == replay_count(48, 0.1) == 5  # 5 / 53 = 9.4% of the mix
        assert not val_texts & {tuple(x.input_ids) for x in added}  # never a validation example
        assert mixed.val == data.val
        picks.setdefault(seed, []).append([tuple(x.input_ids) for x in added])
    assert picks[0][0] == picks[0][1] != picks[1][0]  # seed fixed: the same sample


def seed_answers(model_dir, tokenizer, probes):
    """Cache readable base answers: a random tiny model's greedy answers are mostly special tokens."""
    key = base_key(str(model_dir), template_hash(tokenizer), "none/float32")
    write_answers(key, str(model_dir), {p.id: f"Here is a short answer to: {p.prompt}" for p in probes})


def test_self_replay_trains_on_base_answers_to_probes_that_do_not_measure(tiny_model_dir, chatml_tokenizer,
                                                                          lora_model, write_jsonl, tmp_path, cache,
                                                                          monkeypatch):
    train = write_jsonl(tmp_path / "greet.jsonl", [greeting(i) for i in range(20)])
    val = write_jsonl(tmp_path / "greet_val.jsonl", [greeting(100 + i) for i in range(4)])
    cfg = config(tiny_model_dir, train, val, tmp_path / "self", data__replay={"fraction": 0.2, "source": "self"},
                 train__max_steps=1)
    data = prepare_data(cfg, chatml_tokenizer, str(tiny_model_dir))
    model = lora_model(tiny_model_dir)
    assert isinstance(replay._base_answer(model, chatml_tokenizer, replay_probes()[0].messages()), str)
    assert model.training  # generation leaves the model as training found it
    generated = []

    def fake_answer(model, tokenizer, messages):  # every other answer runs into the length cap
        generated.append(messages[-1]["content"])
        return "word " * 80 if len(generated) % 2 else "A short, complete answer."

    monkeypatch.setattr(replay, "_base_answer", fake_answer)
    mixed, record = mix_replay(cfg, data, model, chatml_tokenizer, str(tiny_model_dir), Console(quiet=True))
    assert record["examples"] == 5 and len(generated) == 10  # cut-off answers skipped, never trained
    (cached,) = (cache / "probe-answers").glob("*.json")
    ids = set(json.loads(cached.read_text())["answers"])  # generated by the base model, then cached
    assert len(ids) == 10 and ids <= {p.id for p in replay_probes()}
    assert not ids & {p.id for p in measure_probes(MEASURE_SIZE)}  # replay never trains what measures
    monkeypatch.undo()
    monkeypatch.setenv("TUNEWISE_CACHE", str(cache))

    seed_answers(tiny_model_dir, chatml_tokenizer, replay_probes())
    console = Console(record=True, width=200)
    loop.train(cfg, console=console)
    assert "replay: 5 examples from self mixed into train (20.0% of 25" in console.export_text()
    manifest = json.loads((tmp_path / "self" / "manifest.json").read_text())
    assert manifest["replay"]["examples"] == 5 and manifest["replay"]["source"] == "self"


def _weights_in_use(model) -> torch.Tensor:
    """The logits of a fixed input: which adapter (if any) the model runs now."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 17, 42, 99, 7]])).logits.float()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bf16: PEFT loads the earlier adapter in fp32
def test_eval_reports_forgetting_and_the_earlier_task_after_from(dtype, parent_run, tiny_model_dir, chatml_tokenizer,
                                                                 sql_example, write_jsonl, tmp_path, cache,
                                                                 monkeypatch):
    run, sql_val = parent_run
    if dtype != "float32":  # a parent trained in this dtype, its task recorded like parent_run's
        train = write_jsonl(tmp_path / "sql.jsonl", [sql_example(i) for i in range(16)])
        run = tmp_path / "parent"
        loop.train(config(tiny_model_dir, train, sql_val, run, model__dtype=dtype))
    seed_answers(tiny_model_dir, chatml_tokenizer, measure_probes(6))
    compare(run, sql_val, "exact_match", max_new_tokens=8,
            forgetting=forgetting.ForgettingOptions(probes=4))  # records the earlier task in the run
    train = write_jsonl(tmp_path / "greet.jsonl", [greeting(i) for i in range(16)])
    val = write_jsonl(tmp_path / "greet_val.jsonl", [greeting(100 + i) for i in range(4)])
    loop.train(config(tiny_model_dir, train, val, tmp_path / "child", lora__init_from=str(run), train__max_steps=2,
                      model__dtype=dtype))
    seen, real_generate = [], forgetting.generate  # what each of the earlier task's generations ran on

    def spy(model, *args, **kwargs):
        seen.append(_weights_in_use(model))
        return real_generate(model, *args, **kwargs)

    monkeypatch.setattr(forgetting, "generate", spy)
    result = compare(tmp_path / "child", val, "exact_match", max_new_tokens=8,
                     forgetting=forgetting.ForgettingOptions(probes=6))
    monkeypatch.setattr(forgetting, "generate", real_generate)
    parent_logits, child_logits = (_weights_in_use(load_tuned(r, device="cpu")[0]) for r in (run, tmp_path / "child"))
    assert not torch.allclose(parent_logits, child_logits, rtol=0, atol=1e-4)  # the two adapters are told apart
    # before, then after; the base answers came from the cache, which seed_answers filled for fp32 only
    assert len(seen) == (2 if dtype == "float32" else 3)
    torch.testing.assert_close(seen[-2], parent_logits, rtol=1e-5, atol=1e-6)  # "before": the earlier adapter
    torch.testing.assert_close(seen[-1], child_logits, rtol=1e-5, atol=1e-6)  # "after": this run's
    section = result["forgetting"]
    # (bf16's base answers are generated here, and a random model leaves some empty: fewer probes scored)
    assert section["probes"] == 6 if dtype == "float32" else 0 < section["probes"] <= 6
    assert section["kl_per_token"] > 0
    assert {"base_loss", "tuned_loss", "loss_change", "verdict", "advice", "cache"} <= section.keys()
    previous = section["previous_task"]
    assert previous["run"] == str(run.resolve()) and previous["metric"] == "exact_match" and previous["n"] == 4
    assert 0 <= previous["before"] <= 1 and 0 <= previous["after"] <= 1
    page = render_html(result)
    assert "<h2>Forgetting</h2>" in page and "KL(base || tuned)" in page
    off = compare(tmp_path / "child", val, "exact_match", max_new_tokens=8,
                  forgetting=forgetting.ForgettingOptions(probes=0, previous_metric="exact_match"))
    assert "kl_per_token" not in off["forgetting"] and "previous_task" in off["forgetting"]


def test_verdict_gives_the_guides_advice_when_forgetting_grows():
    assert forgetting.verdict(0.01)[1] is None
    for kl in (0.1, 1.0):
        words, advice = forgetting.verdict(kl)
        assert "forgetting" in words and "fewer epochs (1-2)" in advice and "r=8 or r=16" in advice
