"""GGUF export: families refused by name, the Ollama template proved against the chat template,
and files llama.cpp itself loads and runs like transformers (tiny random Llama/Qwen2/Qwen3 models,
and the bundled model after a short training run).

The llama.cpp checks need llama-cpp-python (`make install-export`; pip compiles llama.cpp, a few
minutes once, then pip's wheel cache); they are skipped only when it is not importable.
"""

import json
import subprocess
import sys

import gguf
import pytest
import torch

from tunewise.errors import TunewiseError
from tunewise.export import verify as verify_module
from tunewise.export.gguf_vocab import pre_tokenizer_name
from tunewise.export.modelfile import translate, write_modelfile
from tunewise.export.to_gguf import export_gguf

TUNEWISE = [sys.executable, "-m", "tunewise.cli"]
needs_llama_cpp = pytest.mark.skipif(not verify_module.available(),
                                     reason="llama-cpp-python is not installed (make install-export)")


def _tiny(path, tokenizer, family: str, **extra):
    """A random tiny model of one family with the SmolLM2 tokenizer; norms and biases moved off
    their init values so that a tensor mapped to the wrong GGUF name shows in the logits.
    "llama-bias" is Llama with attention biases (attention_bias: true); `extra` goes to the config."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  initializer_range=0.2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=family not in ("qwen2", "mistral"), **extra)
    config = {"llama": lambda: LlamaConfig(**common), "qwen2": lambda: Qwen2Config(**common),
              "llama-bias": lambda: LlamaConfig(attention_bias=True, **common),
              "qwen3": lambda: Qwen3Config(head_dim=32, **common), "mistral": lambda: MistralConfig(**common)}[family]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _sentencepiece_style_tokenizer():
    """A Llama 2 / Mistral v0.3-style tokenizer.json (BPE with byte fallback over '▁' pieces, the
    Prepend + Replace normalizer), trained on a few sentences: no such tokenizer ships offline."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    text = ["The quick brown fox jumps over the lazy dog. SELECT name FROM users WHERE id > 10;",
            "How many rows does the users table have? There are 12345 ids above 333.",
            "You are terse. What is 2 + 2? Show the steps."] * 20
    trainer = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer.normalizer = normalizer
    trainer.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                          show_progress=False))
    learned = json.loads(trainer.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_tokens(["[INST]", "[/INST]"], special_tokens=True)
    return fast


def test_refuses_an_unsupported_family_by_name(tmp_path, tiny_model_dir):
    model = tmp_path / "gemma"
    model.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["architectures"] = ["Gemma2ForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(TunewiseError, match="'Gemma2ForCausalLM', which tunewise does not export"):
        export_gguf(model, tmp_path / "m.gguf", check=False)
    assert not (tmp_path / "m.gguf").exists()
    with pytest.raises(TunewiseError, match="--type 'q4_k'"):
        export_gguf(tiny_model_dir, tmp_path / "m.gguf", "q4_k", check=False)
    with pytest.raises(TunewiseError, match="neither a tunewise run directory"):
        export_gguf(tmp_path / "nothing", tmp_path / "m.gguf", check=False)


def test_pre_tokenizer_named_from_its_split_or_refused():
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                    {"type": "ByteLevel", "use_regex": True}]}
    assert pre_tokenizer_name({"pre_tokenizer": smollm}) == "smollm"
    with pytest.raises(TunewiseError, match=r"pre-tokenizer \(Whitespace\)"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}})


def test_without_llama_cpp_the_message_says_how_to_install(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(verify_module, "llama_cpp", None)
    with pytest.raises(TunewiseError, match="make install-export.*--no-verify"):
        export_gguf(tiny_model_dir, tmp_path / "m.gguf")
    result = export_gguf(tiny_model_dir, tmp_path / "m.gguf", "q8_0", check=False)
    assert result.report is None
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # norms stay f32
    assert "output.weight" not in kinds  # tied embeddings: llama.cpp reuses token_embd


def test_modelfile_template_for_chatml(tmp_path, chatml_tokenizer):
    translation = translate(chatml_tokenizer, add_bos=False)
    assert translation.style == "ChatML"
    assert translation.template == ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                                    "{{ end }}<|im_start|>assistant\n")
    # SmolLM2's template writes a default system prompt when none is given: SYSTEM carries it to Ollama
    assert translation.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    path = tmp_path / "m.Modelfile"
    write_modelfile(path, tmp_path / "m.gguf", translation, ["<|im_end|>"], translation.system)
    text = path.read_text()
    assert "FROM ./m.gguf\n" in text and 'PARAMETER stop "<|im_end|>"\n' in text
    assert f'TEMPLATE """{translation.template}"""\n' in text and f'SYSTEM """{translation.system}"""' in text


@pytest.mark.parametrize("family,style", [("llama3-date-header", "Llama 3"),
                                          ("mistral-v0.3-system-in-last-user", "Mistral [INST]"),
                                          ("deepseek-r1-think-in-prompt", None), ("gemma4-thought-channel", None)])
def test_modelfile_styles_translated_or_refused_by_name(family, style, chatml_tokenizer, tmp_path,
                                                        family_tokenizer):
    tokenizer, _ = family_tokenizer(chatml_tokenizer, tmp_path, family)
    if style is None:
        name = {"deepseek-r1-think-in-prompt": "DeepSeek", "gemma4-thought-channel": "Gemma 4"}[family]
        with pytest.raises(TunewiseError, match=f"looks like {name}, which tunewise cannot translate"):
            translate(tokenizer, add_bos=False)
    else:
        assert translate(tokenizer, add_bos=False).style == style


@needs_llama_cpp
@pytest.mark.parametrize("family", ["llama", "llama-bias", "qwen2", "qwen3"])
def test_tiny_families_run_in_llama_cpp_like_transformers(family, tmp_path, chatml_tokenizer):
    """f16 must pass every check: names, the q/k permutation of weights and biases (llama) or none
    (qwen), biases, q/k norms."""
    model = _tiny(tmp_path / family, chatml_tokenizer, family)
    report = export_gguf(model, tmp_path / f"{family}.gguf", "f16", log=lambda _: None).report
    assert report.failures() == [], report.lines()
    assert report.tokens_equal == report.prompts and report.bos_equal and report.template_equal
    assert 0 < report.nmse < 1e-4


@needs_llama_cpp
def test_a_wrong_permutation_fails_the_greedy_and_clear_lead_checks_too(tmp_path, chatml_tokenizer, monkeypatch):
    """Each check must refuse a broken file on its own: with the q/k biases left unpermuted (NMSE
    0.35), an allowance that grew with the logit error once let greedy and clear-lead checks pass."""
    from tunewise.export import gguf_model

    right = gguf_model._permute
    monkeypatch.setattr(gguf_model, "_permute", lambda w, heads: w if w.ndim == 1 else right(w, heads))
    model = _tiny(tmp_path / "llama", chatml_tokenizer, "llama-bias")
    with pytest.raises(TunewiseError, match="does not match the model") as refused:
        export_gguf(model, tmp_path / "broken.gguf", "f16", log=lambda _: None)
    failures = str(refused.value).splitlines()[0]
    assert "top-1 agreement where transformers' lead is >= 0.02" in failures
    assert "greedy generations part away from a near tie on 3 of 3 prompts" in failures
    assert not (tmp_path / "broken.gguf").exists()


@pytest.mark.parametrize("family,config", [("mistral", {"sliding_window": 8}),
                                           ("qwen2", {"use_sliding_window": True, "sliding_window": 8,
                                                      "max_window_layers": 1})])
def test_a_sliding_window_model_is_refused_by_name(family, config, tmp_path, chatml_tokenizer):
    model = _tiny(tmp_path / family, chatml_tokenizer, family, **config)
    with pytest.raises(TunewiseError, match="sliding_window 8 .* not honoured by llama.cpp"):
        export_gguf(model, tmp_path / "m.gguf", "f16", check=False)
    assert not (tmp_path / "m.gguf").exists()


@needs_llama_cpp
def test_llama_cpp_still_ignores_the_sliding_window_key(tmp_path, chatml_tokenizer):
    """Why the refusal above: written with `llama.attention.sliding_window`, a Mistral with an
    8-token window matches transformers within the window and not beyond it. When this fails,
    llama.cpp has learnt the key: write it instead of refusing."""
    from transformers import AutoModelForCausalLM

    from tunewise.export import gguf_model

    model_dir = _tiny(tmp_path / "mistral", chatml_tokenizer, "mistral", sliding_window=8)
    path = tmp_path / "window.gguf"
    writer_class = gguf_model.gguf.GGUFWriter

    class WithWindow(writer_class):
        def add_file_type(self, ftype):
            self.add_sliding_window(8)
            super().add_file_type(ftype)

    gguf_model.gguf.GGUFWriter = WithWindow
    try:
        gguf_model.write_gguf(model_dir, path, "f16", chatml_tokenizer)
    finally:
        gguf_model.gguf.GGUFWriter = writer_class
    assert gguf.GGUFReader(str(path)).fields["llama.attention.sliding_window"].parts[-1][0] == 8
    ids = chatml_tokenizer("hello world " * 20, add_special_tokens=False)["input_ids"][:32]
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=torch.tensor([ids])).logits[0].numpy()
    cpp = verify_module._cpp_logits(verify_module._llama(path, 64), ids)
    nmse = ((hf - cpp) ** 2).sum(-1) / (hf**2).sum(-1)
    assert nmse[:8].max() < 1e-4 and nmse[8:].max() > 0.05, nmse


@needs_llama_cpp
def test_sentencepiece_style_mistral_runs_in_llama_cpp_like_transformers(tmp_path, template_families):
    """Mistral v0.3 / Llama 2 vocabularies: llama.cpp's sentencepiece tokenizer must split as HF's BPE."""
    tokenizer = _sentencepiece_style_tokenizer()
    tokenizer.chat_template = template_families["mistral-v0.3-system-in-last-user"][0]
    model = _tiny(tmp_path / "mistral", tokenizer, "mistral")
    result = export_gguf(model, tmp_path / "mistral.gguf", "f16", modelfile=True, log=lambda _: None)
    assert result.info.vocab.model == "llama" and result.report.failures() == [], result.report.lines()
    assert result.translation.style == "Mistral [INST]"
    assert 'PARAMETER stop "</s>"' in (tmp_path / "mistral.Modelfile").read_text()


@needs_llama_cpp
def test_q8_0_is_measured_against_the_model(tmp_path, chatml_tokenizer):
    """q8_0's logits within llama.cpp's own tolerance (a random model's near-flat logits make its
    top-1 and greedy figures meaningless, so those are checked on the bundled model)."""
    from transformers import AutoTokenizer

    model = _tiny(tmp_path / "llama", chatml_tokenizer, "llama")
    result = export_gguf(model, tmp_path / "q8.gguf", "q8_0", check=False, log=lambda _: None)
    report = verify_module.verify(result.path, model, AutoTokenizer.from_pretrained(model), "q8_0",
                                  result.info.vocab.eos_ids, "cpu")
    assert report.tokens_equal == report.prompts and 1e-5 < report.nmse < 1e-2


@needs_llama_cpp
@pytest.mark.e2e
def test_export_the_bundled_model_after_training(tmp_path, sql_data):
    from tunewise.config import Config
    from tunewise.train.loop import train

    train_file, val_file = sql_data
    cfg = Config.model_validate({
        "model": {"name": "smollm2-135m-instruct"}, "lora": {"r": 8, "alpha": 16},
        "data": {"train": str(train_file), "val": str(val_file), "max_seq_len": 128, "allow_small": True},
        "train": {"batch_size": 2, "max_steps": 2, "lr": 1e-2, "eval_every": 2, "save_every": 2},
        "output_dir": str(tmp_path / "run"),
    })
    train(cfg)
    proc = subprocess.run(TUNEWISE + ["export", "gguf", "run", "--out", "out/tuned.gguf", "--modelfile"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    print(proc.stdout)  # the parity figures, for the record (pytest -s)
    assert "merge parity: top-1 agreement 100.0%" in proc.stdout
    assert "token ids equal: 3/3" in proc.stdout and "greedy generations: 3/3 equal" in proc.stdout
    assert "checks passed" in proc.stdout
    modelfile = (tmp_path / "out" / "tuned.Modelfile").read_text()
    assert "FROM ./tuned.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    # every training example had the same system prompt: the Modelfile carries it
    assert 'SYSTEM """You are a SQL expert."""' in modelfile
    reader = gguf.GGUFReader(str(tmp_path / "out" / "tuned.gguf"))
    field = reader.fields["tokenizer.chat_template"]
    assert "<|im_start|>" in bytes(field.parts[field.data[0]]).decode()
