"""Failure categories: right format and hallucination per metric, summed into the result and the reports."""

from html.parser import HTMLParser

import pytest

from tunewise.evaluate.failures import (
    CHECKS,
    Failures,
    add_failures,
    failure_check,
    failure_examples,
    json_failures,
    no_check,
    sql_failures,
)
from tunewise.evaluate.report import render_html, score_table

SETUP = ("CREATE TABLE doctors (id INTEGER PRIMARY KEY, name TEXT, fee REAL);"
         "CREATE TABLE visits (id INTEGER PRIMARY KEY, doctor_id INTEGER, name TEXT, visited_on TEXT);"
         "INSERT INTO doctors VALUES (1, 'Ava', 50.0);")
META = {"setup_sql": SETUP}


@pytest.mark.parametrize("output, format_ok, hallucination", [
    ("SELECT name FROM doctors WHERE fee > 10;", True, False),
    ("SELECT d.name, COUNT(*) FROM doctors d JOIN visits v ON v.doctor_id = d.id GROUP BY d.name", True, False),
    ("SELECT doctor_fee FROM doctors", True, True),  # an invented column
    ("SELECT name FROM physicians", True, True),  # an invented table
    ("SELECT v.fee FROM visits v", True, True),  # a real column on the wrong table
    # ambiguous: wrong, but nothing invented
    ("SELECT name FROM doctors JOIN visits ON visits.doctor_id = doctors.id", True, False),
    ("SELEC name FROM doctors", False, None),
    ("SELECT name FROM doctors; SELECT 1;", False, False),  # two statements: wrong format, names all real
    ("DROP TABLE doctors", False, None),  # not a query
    ("", False, None),
    ("Here is the query:\n```sql\nSELECT booking_price FROM doctors;\n```", False, True),  # prose, invented name inside
    ("```sql\nSELECT fee FROM doctors;\n```\nThis selects the fee with the query above.", False, False),
])
def test_sql_format_and_hallucination(output, format_ok, hallucination):
    found = sql_failures(output, "SELECT 1", META)
    assert (found.format_ok, found.hallucination) == (format_ok, hallucination), found.detail


def test_sql_failure_says_which_name():
    assert "doctor_fee" in sql_failures("SELECT doctor_fee FROM doctors", "", META).detail
    assert "booking_price" in sql_failures("Try:\n```sql\nSELECT booking_price FROM doctors;\n```", "", META).detail


def test_sql_check_never_runs_the_query():
    # a runaway cross join would take minutes to run; preparing it is instant
    runaway = "SELECT COUNT(*) FROM doctors a, doctors b, doctors c, doctors d, doctors e, doctors f"
    found = sql_failures(runaway, "", META)
    assert found == Failures(True, False)


def test_json_format_and_keys_not_in_reference():
    ref = '{"name": "Ava", "address": {"city": "Oslo"}}'
    assert json_failures('{"name": "Bo", "address": {"city": "Rome"}}', ref, {}) == Failures(True, False)
    found = json_failures('{"name": "Bo", "address": {"town": "Rome"}}', ref, {})
    assert found.format_ok and found.hallucination and "town" in found.detail
    assert json_failures("name: Bo", ref, {}).format_ok is False


def test_checks_by_metric_name():
    assert failure_check("sql_exec") is CHECKS["sql_exec"]
    assert failure_check("exact_match") is no_check
    regex = failure_check(r"regex:\d+")
    assert regex("42", "", {}).format_ok and regex("x42", "", {}).format_ok is False


def test_user_metric_brings_its_check(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(
        "from tunewise.evaluate.failures import Failures\n"
        "def shout(output, reference, meta):\n    return float(output.isupper())\n"
        "shout.failures = lambda output, reference, meta: Failures(output.endswith('!'), 'X' in output)\n")
    monkeypatch.chdir(tmp_path)
    check = failure_check("mine:shout")
    assert check("HI!", "", {}) == Failures(True, False)
    assert check("X", "", {}) == Failures(False, True)


def _result():
    rows = [{"prompt": "q1", "reference": "SELECT fee FROM doctors", "base": "Sure! SELECT fees FROM doctors",
             "tuned": "SELECT fee FROM doctors", "base_ok": 0.0, "tuned_ok": 1.0},
            {"prompt": "q2", "reference": "SELECT name FROM doctors", "base": "I cannot help.",
             "tuned": "SELECT nam FROM doctors", "base_ok": 0.0, "tuned_ok": 0.0}]
    return {"metric": "sql_exec", "n": 2, "data": "d.jsonl", "base": {"score": 0.0}, "tuned": {"score": 0.5},
            "examples": rows}


def test_add_failures_rows_and_shares():
    result = add_failures(_result(), "sql_exec", [META, META])
    base, tuned = result["examples"][0], result["examples"][1]
    assert (base["base_format"], base["base_hallucination"]) == (False, True)
    assert (tuned["tuned_format"], tuned["tuned_hallucination"]) == (True, True)
    assert "nam" in tuned["tuned_failure"]
    assert result["base"]["format"] == 0.0 and result["base"]["hallucination"] == 0.5  # 2nd: no query to judge
    assert result["tuned"]["format"] == 1.0 and result["tuned"]["hallucination"] == 0.5
    listed = failure_examples(result, "tuned")
    assert listed["wrong"] == [] and listed["hallucination"] == [tuned] and listed["format"] == []
    assert failure_examples(result, "base")["format"] == [base, result["examples"][1]]
    plain = add_failures(_result(), "exact_match", [{}, {}])
    assert plain["base"]["format"] is None and plain["tuned"]["hallucination"] is None


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text = []

    def handle_data(self, data):
        self.text.append(data)


def test_reports_show_the_categories():
    result = add_failures(_result(), "sql_exec", [META, META])
    headers = [c.header for c in score_table(result).columns]
    assert headers[-2:] == ["right format", "hallucination"]
    assert [c.header for c in score_table(add_failures(_result(), "exact_match", [{}, {}])).columns][-1] == "correct"
    parser = _Text()
    parser.feed(render_html(result))
    text = "".join(parser.text)
    assert "right format" in text and "Failures by category" in text
    assert "tuned: hallucination" in text and "no such column: nam" in text
    assert "50.0%" in text  # the hallucination share


def test_the_json_extraction_metric_gets_the_json_checks():
    """json_fields (the JSON example's metric): prose is the wrong format, an invented key a hallucination."""
    check = failure_check("json_fields")
    assert check('{"name": "Ann"}', '{"name": "Ann"}', {}) == Failures(True, False, "")
    assert check("The name is Ann.", '{"name": "Ann"}', {}).format_ok is False
    invented = check('{"name": "Ann", "nickname": "A"}', '{"name": "Ann"}', {})
    assert invented.hallucination is True and "nickname" in invented.detail
