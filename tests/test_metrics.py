"""Each metric on hand-made cases."""

import pytest

from tunewise.errors import TunewiseError
from tunewise.evaluate.metrics import get_metric

SETUP = ("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score INTEGER);"
         "INSERT INTO t VALUES (1, 'a', 30), (2, 'b', 10), (3, 'c', 20), (4, 'd', 10);")
META = {"setup_sql": SETUP}
sql = get_metric("sql_exec")


def test_sql_exec_same_rows_different_query_scores_1():
    ref = "SELECT name FROM t WHERE score > 15;"
    assert sql("SELECT name FROM t WHERE NOT score <= 15", ref, META) == 1.0
    assert sql("SELECT name FROM t WHERE score > 25;", ref, META) == 0.0


def test_sql_exec_order_matters_only_with_order_by():
    unordered = "SELECT name FROM t WHERE score >= 20;"
    assert sql("SELECT name FROM t WHERE score >= 20 ORDER BY name DESC;", unordered, META) == 1.0  # multiset
    ordered = "SELECT name FROM t ORDER BY score DESC LIMIT 2;"
    assert sql("SELECT name FROM t WHERE score >= 20 ORDER BY score DESC;", ordered, META) == 1.0
    assert sql("SELECT name FROM t WHERE score >= 20 ORDER BY score ASC;", ordered, META) == 0.0


def test_sql_exec_multiset_counts_duplicates():
    ref = "SELECT score FROM t;"
    assert sql("SELECT DISTINCT score FROM t;", ref, META) == 0.0


def test_prose_or_markdown_around_sql_scores_0():
    ref = "SELECT COUNT(*) FROM t;"
    assert sql("SELECT COUNT(*) FROM t;", ref, META) == 1.0
    assert sql("```sql\nSELECT COUNT(*) FROM t;\n```", ref, META) == 0.0
    assert sql("Here is the query: SELECT COUNT(*) FROM t;", ref, META) == 0.0
    assert sql("SELECT COUNT(*) FROM t; SELECT 1;", ref, META) == 0.0  # one query only


@pytest.mark.parametrize("bad", ["SELEC name FROM t", "SELECT nope FROM t", "", "DROP TABLE t",
                                 "ATTACH DATABASE '/tmp/tunewise-pwned.db' AS x", "INSERT INTO t VALUES (9,'z',1)",
                                 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                                 "SELECT COUNT(*) FROM c"])
def test_bad_sql_scores_0_without_crashing(bad, tmp_path):
    assert sql(bad, "SELECT COUNT(*) FROM t;", META) == 0.0


def test_sql_exec_needs_setup():
    with pytest.raises(TunewiseError, match="setup_sql"):
        sql("SELECT 1", "SELECT 1", {})


def test_exact_match_and_json_and_regex():
    em = get_metric("exact_match")
    assert em(" SELECT 1; \n", "SELECT 1;", {}) == 1.0 and em("select 1;", "SELECT 1;", {}) == 0.0
    js = get_metric("json_valid")
    assert js('{"a": [1, 2]}', "", {}) == 1.0 and js("{'a': 1}", "", {}) == 0.0 and js("[" * 100000, "", {}) == 0.0
    rx = get_metric(r"regex:SELECT .*;")
    assert rx("SELECT a FROM b;", "", {}) == 1.0 and rx("Sure! SELECT a FROM b;", "", {}) == 0.0
    with pytest.raises(TunewiseError, match="regular expression"):
        get_metric("regex:(unclosed")


def test_user_metric_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text("def shouty(output, reference, meta):\n"
                                            "    return float(output.isupper())\n")
    monkeypatch.chdir(tmp_path)
    metric = get_metric("my_metrics:shouty")
    assert metric("YES", "", {}) == 1.0 and metric("no", "", {}) == 0.0
    with pytest.raises(TunewiseError, match="no function"):
        get_metric("my_metrics:missing")
    with pytest.raises(TunewiseError, match="unknown metric"):
        get_metric("bleu")


@pytest.mark.parametrize("write", ["DELETE FROM t WHERE id = 1 RETURNING id",
                                   "UPDATE t SET score = 0 WHERE id = 1 RETURNING id",
                                   "INSERT INTO t VALUES (5, 'z', 0) RETURNING 1"])
def test_model_output_that_writes_is_refused(write):
    """Each statement returns the reference's rows if it runs: only the authorizer makes it score 0."""
    assert sql(write, "SELECT id FROM t WHERE id = 1", META) == 0.0


def test_model_output_cannot_attach_a_file(tmp_path):
    target = tmp_path / "pwned.db"
    assert sql(f"ATTACH DATABASE '{target}' AS x", "SELECT 1", META) == 0.0
    assert not target.exists()  # ATTACH would have created it


def test_json_fields_checks_valid_json_and_each_field():
    score = get_metric("json_fields")
    ref = '{"name": "Maria Lopez", "age": 34, "city": "Porto", "member": true}'
    assert score('{"age": 34.0, "name": "maria lopez ", "city": "Porto", "member": true}', ref, {}) == 1.0
    assert score('{"name": "Maria Lopez", "age": 35, "city": "Porto", "member": true}', ref, {}) == 0.75
    assert score('{"name": "Maria Lopez", "age": 34, "city": "Porto", "member": 1}', ref, {}) == 0.75  # not a bool
    assert score('{"name": "Maria Lopez", "age": 34, "city": "Porto"}', ref, {}) == 0.75  # a field missing
    assert score('{"name": "Maria Lopez", "age": 34, "city": "Porto", "member": true, "x": 1}', ref, {}) == 0.8
    assert score('```json\n{"name": "Maria Lopez"}\n```', ref, {}) == 0.0  # markdown around it: not JSON
    assert score('["Maria Lopez", 34]', ref, {}) == 0.0  # valid JSON, but not an object
    assert score('{"a": null}', '{"a": null}', {}) == 1.0 and score('{"a": 0}', '{"a": null}', {}) == 0.0
    with pytest.raises(TunewiseError, match="JSON object as the reference"):
        score("{}", "[1]", {})


@pytest.mark.parametrize("ref,answer", [
    # the answers return the reference's rows in another order; only a top-level ORDER BY orders them
    ("SELECT name, RANK() OVER (ORDER BY score DESC) FROM t", "SELECT name, RANK() OVER (ORDER BY score DESC) "
     "FROM t ORDER BY name DESC"),
    ("SELECT name FROM (SELECT name FROM t ORDER BY score LIMIT 3)", "SELECT name FROM t WHERE score < 30 "
     "ORDER BY name DESC"),
    ("WITH top AS (SELECT * FROM t ORDER BY score DESC LIMIT 2) SELECT name FROM top",
     "SELECT name FROM t WHERE score >= 20 ORDER BY name DESC"),
    ("SELECT name FROM t WHERE name <> 'order by' AND score > 15", "SELECT name FROM t WHERE score > 15 ORDER BY "
     "name DESC"),
])
def test_only_a_top_level_order_by_orders_the_rows(ref, answer):
    assert sql(answer, ref, META) == 1.0


def test_a_top_level_order_by_of_a_compound_query_orders_the_rows():
    ref = "SELECT name FROM t WHERE score > 15 UNION SELECT name FROM t WHERE id = 4 ORDER BY name DESC"
    assert sql("SELECT name FROM t WHERE score > 15 OR id = 4 ORDER BY name DESC", ref, META) == 1.0
    assert sql("SELECT name FROM t WHERE score > 15 OR id = 4 ORDER BY name", ref, META) == 0.0


@pytest.mark.parametrize("ref,why", [
    ("SELECT nope FROM t", "the reference query fails in SQLite: no such column: nope"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT COUNT(*) FROM c",
     "the reference query fails in SQLite: ran past 2,000,000 SQLite VM steps"),
])
def test_a_broken_reference_is_refused_by_line_before_any_generation(ref, why, tmp_path, write_jsonl):
    from tunewise.evaluate.compare import compare

    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "SELECT 1"}],
            "meta": META}
    bad = {**good, "messages": [good["messages"][0], {"role": "assistant", "content": ref}]}
    data = write_jsonl(tmp_path / "test.jsonl", [good, bad])
    # no run directory at all: the reference is checked before any model is loaded or any answer generated
    with pytest.raises(TunewiseError, match=f"^{data}:2: {why}"):
        compare(tmp_path / "no-run", data, "sql_exec")


def test_json_fields_two_empty_objects_are_identical_and_nested_strings_are_normalized():
    score = get_metric("json_fields")
    assert score("{}", "{}", {}) == 1.0 and score('{"a": 1}', "{}", {}) == 0.0
    ref = '{"person": {"name": "Maria Lopez", "tags": ["VIP", "Porto"]}, "n": 1}'
    assert score('{"person": {"name": " maria lopez", "tags": ["vip", "PORTO "]}, "n": 1.0}', ref, {}) == 1.0
    assert score('{"person": {"name": "Maria Lopez", "tags": ["Porto", "VIP"]}, "n": 1}', ref, {}) == 0.5  # order
    assert score('{"person": {"name": "Maria Lopez", "tags": ["VIP"]}, "n": 1}', ref, {}) == 0.5  # one missing
    assert score('{"person": {"name": "Maria Lopez", "tags": ["VIP", "Porto"], "x": 0}, "n": 1}', ref, {}) == 0.5
    assert score('{"person": {"name": "Maria Lopez", "tags": ["VIP", 1]}, "n": 1}', ref, {}) == 0.5


def test_the_earlier_tasks_references_are_checked_before_any_generation_too(tmp_path, write_jsonl):
    from tunewise.evaluate.compare import compare
    from tunewise.evaluate.forgetting import ForgettingOptions

    def row(ref):
        return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ref}], "meta": META}

    good = write_jsonl(tmp_path / "test.jsonl", [row("SELECT 1")])
    earlier = write_jsonl(tmp_path / "earlier.jsonl", [row("SELECT 1"), row("SELECT 2"), row("SELECT nope FROM t")])
    parent = tmp_path / "parent"
    (parent / "adapter").mkdir(parents=True)
    (parent / "config.yaml").write_text("{}")
    options = ForgettingOptions(0, str(parent), str(earlier), "sql_exec")
    with pytest.raises(TunewiseError, match=f"^{earlier}:3: the reference query fails in SQLite: no such column"):
        compare(tmp_path / "no-run", good, "sql_exec", forgetting=options)
