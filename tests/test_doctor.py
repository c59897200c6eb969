"""The data doctor: every error class with its line, legal encodings, bounded memory, template rules."""

import json
import subprocess
import sys
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewise.data.doctor import check
from tunewise.data.load import DataError, iter_examples, load_examples
from tunewise.errors import TunewiseError


def write_lines(tmp_path, lines, name="d.jsonl", raw=False):
    path = tmp_path / name
    path.write_bytes(lines if raw else ("\n".join(lines) + "\n").encode())
    return path


@pytest.fixture(scope="session")
def many(sql_example):
    """many(n=60, start=0) -> n good JSONL lines"""

    def lines(n=60, start=0):
        return [json.dumps(sql_example(start + i)) for i in range(n)]

    return lines


BAD_LINES = {
    "invalid-json": '{"messages": [',
    "not-object": '[1, 2]',
    "missing-messages": '{"text": "hi"}',
    "messages-not-list": '{"messages": "hi"}',
    "empty-messages": '{"messages": []}',
    "message-not-object": '{"messages": ["hi"]}',
    "missing-role": '{"messages": [{"content": "hi"}]}',
    "unknown-role": '{"messages": [{"role": "bot", "content": "hi"}]}',
    "bad-content": '{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "x"}]}',
    "empty-assistant": '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}',
    "no-assistant": '{"messages": [{"role": "user", "content": "q"}]}',
    "last-not-assistant": ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, '
                           '{"role": "user", "content": "?"}]}'),
}


@pytest.mark.parametrize("code", sorted(BAD_LINES))
def test_each_error_class_names_its_line(tmp_path, code, many):
    lines = many(60)
    lines.insert(41, BAD_LINES[code])  # line 42
    report = check(write_lines(tmp_path, lines))
    errors = [f for f in report.findings if f.level == "error"]
    assert [(f.code, f.line) for f in errors] == [(code, 42)]
    with pytest.raises(DataError, match=r"d\.jsonl:42: "):
        load_examples(tmp_path / "d.jsonl")


def test_missing_vs_null_vs_wrong_type_content(tmp_path):
    for content, word in (('', "missing"), (', "content": null', "null"), (', "content": 5', "int")):
        line = f'{{"messages": [{{"role": "user"{content}}}, {{"role": "assistant", "content": "a"}}]}}'
        path = write_lines(tmp_path, [line])
        with pytest.raises(DataError, match=word):
            load_examples(path)


def test_non_utf8_line(tmp_path, many):
    data = ("\n".join(many(60)) + "\n").encode() + b'{"messages": "\xff\xfe"}\n'
    report = check(write_lines(tmp_path, data, raw=True))
    assert [(f.code, f.line) for f in report.findings if f.level == "error"] == [("not-utf8", 61)]


def test_bom_crlf_and_blank_lines_are_legal(tmp_path, many):
    body = "\r\n".join(many(60)[:30] + ["", "   "] + many(60)[30:]) + "\r\n"
    path = write_lines(tmp_path, b"\xef\xbb\xbf" + body.encode(), raw=True)
    report = check(path)
    assert report.errors == 0 and report.stats["examples"][str(path)] == 60
    assert [e.line for e in iter_examples(path)][30] == 33  # blank lines still count for numbering


def test_dataset_size_thresholds(tmp_path, many):
    small = check(write_lines(tmp_path, many(20)))
    assert [f.code for f in small.findings if f.level == "error"] == ["too-few-examples"]
    assert check(write_lines(tmp_path, many(20)), allow_small=True).errors == 0
    medium = check(write_lines(tmp_path, many(70)))
    assert medium.errors == 0 and any(f.code == "few-examples" for f in medium.findings)


def test_duplicates_leakage_roles_system_prompts_and_outliers(tmp_path, sql_example, many):
    lines = many(120)
    lines.append(lines[5])  # exact duplicate of line 6 -> line 121
    near = sql_example(7)
    near["messages"][2]["content"] = near["messages"][2]["content"].upper()
    lines.append(json.dumps(near))  # near duplicate of line 8 -> line 122
    odd = sql_example(500)
    odd["messages"] = [odd["messages"][0], odd["messages"][2], odd["messages"][1], odd["messages"][2]]
    lines.append(json.dumps(odd))  # assistant before any user -> line 123
    long = sql_example(501)
    long["messages"][2]["content"] = "SELECT " + ", ".join(f"c{i}" for i in range(400)) + " FROM t;"
    lines.append(json.dumps(long))  # response length outlier -> line 124
    other = sql_example(502)
    other["messages"][0]["content"] = "Be brief."
    lines.append(json.dumps(other))  # a different system prompt -> line 125
    val = write_lines(tmp_path, [lines[10], json.dumps(sql_example(900))], name="val.jsonl")
    report = check(write_lines(tmp_path, lines), val)
    found = {(f.code, f.line) for f in report.findings}
    assert ("duplicate", 121) in found and ("near-duplicate", 122) in found
    assert ("role-order", 123) in found and ("length-outlier", 124) in found
    assert ("train-val-overlap", 1) in found and ("train-val-overlap", 2) not in found
    assert any(f.code == "system-prompt-differs" for f in report.findings)
    assert report.errors == 0


def test_large_file_is_streamed_in_bounded_memory(tmp_path, sql_example):
    """Memory grows by a few hashes per example, never with the text: a 12 MB file of 4 KB
    examples is checked in a small fraction of its size."""
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for i in range(3_000):
            ex = sql_example(i)
            ex["messages"][0]["content"] += " Schema: " + "CREATE TABLE t (a INTEGER); " * 150
            handle.write(json.dumps(ex) + "\n")
    tracemalloc.start()
    report = check(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.stats["examples"][str(path)] == 3_000
    assert path.stat().st_size > 12_000_000
    assert peak < 0.1 * path.stat().st_size, f"peak {peak} bytes for a {path.stat().st_size}-byte file"


def test_a_one_megabyte_line_is_fine(tmp_path, sql_example, many):
    big = sql_example(1)
    big["messages"][1]["content"] = "x" * 1_000_000
    report = check(write_lines(tmp_path, many(60) + [json.dumps(big)]))
    assert report.errors == 0


# --- chat-template rules, each broken by a small Jinja template ---------------------------------

def with_template(tokenizer, template):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = template
    return tok


@pytest.fixture(scope="session")
def template_errors(sql_example):
    """template_errors(tmp_path, tokenizer, turns=1) -> (error codes, report) of 60 examples checked with tokenizer"""

    def errors(tmp_path, tokenizer, turns=1):
        path = write_lines(tmp_path, [json.dumps(sql_example(i, turns=turns)) for i in range(60)])
        report = check(path, tokenizer=tokenizer, max_seq_len=512)
        return {f.code for f in report.findings if f.level == "error"}, report

    return errors


def test_good_template_passes_with_stats_and_preview(tmp_path, chatml_tokenizer, template_errors):
    errors, report = template_errors(tmp_path, chatml_tokenizer, turns=2)
    assert errors == set()
    stats = next(iter(report.stats["tokens"].values()))
    assert stats["truncated"] == 0 and 0 < stats["trained_share_median"] < 1
    trained = "".join(p["text"] for p in report.preview["pieces"] if p["trained"])
    assert trained.count("<|im_end|>") == 2 and "Rows of table" not in trained


BROKEN_TEMPLATES = {  # code: (a template that breaks that rule, assistant turns per example)
    # the last message of any role is rendered differently: the user turn ending the inference
    # prompt is not what training puts before the answer
    "generation-prompt-mismatch": ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}"
                                   "{% if loop.last %}{{ ' (final)' }}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
                                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}", 2),
    "generation-prompt-mismatch ": ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
                                    "'<|im_end|>\n' }}"
                                    "{% endfor %}{% if add_generation_prompt %}"
                                    "{{ '<|im_start|>assistant:\n' }}{% endif %}", 1),
}


@pytest.mark.parametrize("code", sorted(BROKEN_TEMPLATES))
def test_template_breaking_a_rule_is_an_error(tmp_path, chatml_tokenizer, code, template_errors):
    template, turns = BROKEN_TEMPLATES[code]
    errors, _ = template_errors(tmp_path, with_template(chatml_tokenizer, template), turns=turns)
    assert code.strip() in errors


def test_no_stop_token_at_all_names_the_config_key(tmp_path, chatml_tokenizer, template_errors):
    """A template with no end-of-turn and a model with no EOS: the fix is data.end_of_turn."""
    tok = with_template(chatml_tokenizer, "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
                                          "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    tok.eos_token = None
    errors, report = template_errors(tmp_path, tok)
    assert errors == {"no-end-of-turn"}
    assert any("data.end_of_turn" in f.message for f in report.findings)


def test_doubled_bos(tmp_path, llama3_tokenizer, template_errors):
    tok = with_template(llama3_tokenizer, "{{ bos_token }}" + llama3_tokenizer.chat_template)
    tok.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    errors, _ = template_errors(tmp_path, tok)
    assert "double-bos" in errors


def test_truncation_and_lost_assistant_share(tmp_path, chatml_tokenizer, many):
    path = write_lines(tmp_path, many(60))
    report = check(path, tokenizer=chatml_tokenizer, max_seq_len=40)
    stats = report.stats["tokens"][str(path)]
    assert stats["truncated"] == 60 and stats["assistant_tokens_lost_share"] > 0
    assert any(f.code == "truncated" for f in report.findings)


def test_no_chat_template(tmp_path, chatml_tokenizer, template_errors):
    tok = with_template(chatml_tokenizer, None)
    tok.chat_template = None
    errors, _ = template_errors(tmp_path, tok)
    assert errors == {"no-chat-template"}


def test_cli_json_shape_and_exit_codes(tmp_path, many):
    good = write_lines(tmp_path, many(120), name="good.jsonl")
    bad = write_lines(tmp_path, many(60) + ['{"messages": ['], name="bad.jsonl")
    run = lambda *a: subprocess.run([sys.executable, "-m", "tunewise.cli", "data", "check", *a],
                                    capture_output=True, text=True, cwd=tmp_path)
    proc = run(str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"ok", "errors", "warnings", "counts", "findings", "stats", "preview"} <= data.keys() and data["ok"]
    proc = run(str(bad), "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["errors"] == 1
    assert data["findings"][0] == {"level": "error", "code": "invalid-json", "file": str(bad), "line": 61,
                                   "message": data["findings"][0]["message"]}
    dup = write_lines(tmp_path, many(120) + [many(1)[0]], name="dup.jsonl")
    assert run(str(dup)).returncode == 0 and run(str(dup), "--strict").returncode == 1
    assert run("--nope").returncode == 2
    proc = run(str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode)
       | st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                      lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.sampled_from(["messages", "role", "content", "prompt", "completion",
                                                         "meta"]), c, max_size=4),
                      max_leaves=12).map(lambda v: json.dumps(v).encode()))
def test_fuzz_loader_raises_only_its_own_errors(tmp_path, blob):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(blob)
    try:
        load_examples(path)
        refused = None
    except DataError as e:
        refused = e.code
    except TunewiseError:  # nothing but blank lines
        refused = "empty-file"
    report = check(path)  # the doctor never raises on content, and agrees with the loader
    codes = {f.code for f in report.findings if f.level == "error"}
    if refused is None:
        assert codes == {"too-few-examples"}  # one good example: only the dataset-level error
    else:
        assert refused in codes
