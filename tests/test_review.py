"""Blind review: the page hides which answer is tuned, the key undoes the blinding, and a real
headless browser clicks through the page, keeps the answers across a reload and downloads them."""

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.errors import TunewiseError
from tunewise.evaluate.review import blind, score, write_review


def _result(n=6):
    rows = [{"prompt": f"question {i} <b>&</b>", "reference": f"SELECT {i};", "base": f"base answer {i}",
             "tuned": f"tuned answer {i}", "base_ok": 0.0, "tuned_ok": 1.0} for i in range(n)]
    return {"metric": "sql_exec", "n": n, "data": "test.jsonl", "run": "runs/x", "examples": rows,
            "base": {"score": 0.0}, "tuned": {"score": 1.0}}


def _judge(items, correct_side_text="tuned"):
    """What a perfect reviewer answers: the tuned answer correct, the base one not; hallucination on base."""
    answers = {}
    for item in items:
        answers[item["item"]] = {letter: {"correct": text.startswith(correct_side_text), "format": True,
                                          "hallucination": text.startswith("base")}
                                 for letter, text in item["answers"].items()}
    return answers


def test_blinding_is_undone_by_the_key(tmp_path):
    result = _result()
    page, key_path = write_review(result, ["schema"] * 6, tmp_path, seed=3)
    items, _ = blind(result, ["schema"] * 6, seed=3)
    key = json.loads(key_path.read_text())
    assert key_path.stat().st_mode & 0o777 == 0o600 and page.stat().st_mode & 0o077  # key private, page not
    orders = [key["order"][str(i)]["A"] for i in range(6)]
    assert set(orders) == {"base", "tuned"}  # the order really varies per example
    for i, item in enumerate(items):  # the key names the side whose answer each letter shows
        for letter in "AB":
            assert item["answers"][letter] == result["examples"][i][key["order"][str(i)][letter]]
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"review_id": key["review_id"], "key_file": str(key_path),
                                   "answers": _judge(items)}))
    scores = score(answers)
    assert scores["tuned"]["correct"] == {"answered": 6, "yes": 6, "share": 1.0}
    assert scores["base"]["correct"]["share"] == 0.0
    assert scores["base"]["hallucination"]["share"] == 1.0 and scores["tuned"]["hallucination"]["share"] == 0.0
    assert scores["items"] == 6


def test_page_does_not_carry_the_key(tmp_path):
    result = _result()
    page, key_path = write_review(result, ["schema"] * 6, tmp_path)
    text = page.read_text()
    assert '"order"' not in text and "base answer 0" in text
    assert '"base"' not in text and '"tuned"' not in text  # the answers are keyed by letter only
    assert "<b>" not in text  # data text never enters the page as markup
    seeds = {json.loads(write_review(result, [""] * 6, tmp_path / str(i))[1].read_text())["seed"] for i in range(3)}
    assert len(seeds) == 3  # no seed given: a fresh random one each time, so the order cannot be rebuilt


def test_score_refuses_answers_of_another_review(tmp_path):
    _, key_path = write_review(_result(), [""] * 6, tmp_path)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"review_id": "other", "key_file": str(key_path), "answers": {}}))
    with pytest.raises(TunewiseError, match="does not match the key"):
        score(answers)
    answers.write_text("{not json")
    with pytest.raises(TunewiseError, match="not a JSON answers file"):
        score(answers)


def test_cli_scores_and_reuses_an_eval_json(tmp_path, write_jsonl):
    rows = [{"messages": [{"role": "system", "content": "Schema: t(a)"},
                          {"role": "user", "content": f"question {i} <b>&</b>"},
                          {"role": "assistant", "content": f"SELECT {i};"}]} for i in range(6)]
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    (tmp_path / "eval.json").write_text(json.dumps(_result()))
    cli = CliRunner()
    proc = cli.invoke(app, ["review", "--run", str(tmp_path), "--data", str(data),
                            "--eval", str(tmp_path / "eval.json"), "--out", str(tmp_path / "rev"), "--seed", "1"])
    assert proc.exit_code == 0, proc.output
    key = json.loads((tmp_path / "rev" / "review-key.json").read_text())
    page = (tmp_path / "rev" / "review.html").read_text()
    assert "Schema: t(a)" in page  # the context a reviewer needs to spot invented names
    items, _ = blind(_result(), [""] * 6, seed=1)
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"review_id": key["review_id"], "key_file": str(tmp_path / "rev" / "review-key.json"),
                                   "answers": _judge(items)}))
    proc = cli.invoke(app, ["review", "--score", str(answers)], terminal_width=200)
    assert proc.exit_code == 0, proc.output
    lines = {line.split()[1]: line for line in proc.output.splitlines() if line.split()[1:2] in (["base"], ["tuned"])}
    assert "100.0% (6/6)" in lines["tuned"].split("│")[2] and "0.0% (0/6)" in lines["base"].split("│")[2]
    proc = cli.invoke(app, ["review", "--run", str(tmp_path)])
    assert isinstance(proc.exception, TunewiseError) and "--data" in str(proc.exception)


# --- a real browser ------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium/chromedriver on this machine (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow",
                                                           "downloadPath": str(tmp_path / "downloads")})
    yield driver
    driver.quit()


def _click(driver, item, letter, question, value):
    from selenium.webdriver.common.by import By

    selector = f'button[data-item="{item}"][data-answer="{letter}"][data-question="{question}"][data-value="{value}"]'
    driver.find_element(By.CSS_SELECTOR, selector).click()


def test_review_page_in_a_headless_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By

    result = _result(4)
    page, key_path = write_review(result, ["CREATE TABLE t (a INTEGER);"] * 4, tmp_path / "review", seed=5)
    key = json.loads(key_path.read_text())
    browser.get(page.as_uri())
    sections = browser.find_elements(By.CSS_SELECTOR, "main section")
    assert len(sections) == 4
    assert "question 0 <b>&</b>" in sections[0].text  # shown as text
    assert "base" not in sections[0].text.replace("base answer", "")  # no label gives the side away
    # judge three examples: the tuned answer correct, the base answer not; format yes; one hallucination
    for item in ("0", "1", "2"):
        for letter in "AB":
            tuned = key["order"][item][letter] == "tuned"
            _click(browser, item, letter, "correct", "true" if tuned else "false")
            _click(browser, item, letter, "format", "true")
    _click(browser, "0", "A", "correct", "true")  # a change of mind: the last click counts
    _click(browser, "0", "A", "correct", "true" if key["order"]["0"]["A"] == "tuned" else "false")
    _click(browser, "1", "B", "hallucination", "true")
    assert "answered 13 of 24" in browser.find_element(By.ID, "progress").text
    # The answers live in the browser: a reload keeps them. Chromium hands a page's localStorage write
    # to its browser process asynchronously, and a reload in a fresh renderer can read the store before
    # the write lands (seen once in CI on a busy machine: 0 restored). So reload until restored, a few
    # seconds at most; a page that does not keep its answers still fails.
    deadline, restored = time.time() + 15, 0
    while True:
        browser.refresh()
        restored = len(browser.find_elements(By.CSS_SELECTOR, "button.chosen"))
        if restored == 13 or time.time() > deadline:
            break
        time.sleep(0.5)
    stored = browser.execute_script("return JSON.stringify(localStorage)")
    assert restored == 13, f"{restored} choices restored after reload; localStorage holds {stored}"
    assert "answered 13 of 24" in browser.find_element(By.ID, "progress").text
    browser.find_element(By.ID, "download").click()
    target = tmp_path / "downloads" / f"review-answers-{key['review_id']}.json"
    deadline = time.time() + 20
    while not target.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert target.is_file(), list((tmp_path / "downloads").glob("*"))
    scores = score(target)
    assert scores["tuned"]["correct"] == {"answered": 3, "yes": 3, "share": 1.0}
    assert scores["base"]["correct"] == {"answered": 3, "yes": 0, "share": 0.0}
    assert scores["base"]["format"]["share"] == scores["tuned"]["format"]["share"] == 1.0
    side = key["order"]["1"]["B"]
    assert scores[side]["hallucination"] == {"answered": 1, "yes": 1, "share": 1.0}
    assert Path(json.loads(target.read_text())["key_file"]) == key_path.resolve()
