"""The table of docs/forgetting.md from the eval JSONs benchmarks/forgetting.sh writes.

    python benchmarks/forgetting_table.py runs/forgetting
"""

import json
import sys
from pathlib import Path

ROWS = [("sql", "SQL only (parent)"), ("json-plain", "(a) SQL, then JSON --from, plain"),
        ("json-sql-replay", "(b) ... with 5% SQL replay"), ("json-self-replay", "(c) ... with 5% self replay")]


def main(out: Path) -> None:
    print("| run | SQL test (sql_exec) | JSON test (json_fields) | KL(base \\|\\| tuned) per token "
          "| loss on base answers (base -> tuned) | verdict |")
    print("|---|---|---|---|---|---|")
    for name, label in ROWS:
        path = out / name / "eval.json"
        if not path.is_file():
            print(f"| {label} | not measured | | | | |")
            continue
        result = json.loads(path.read_text())
        f = result.get("forgetting") or {}
        prev = f.get("previous_task")
        if result["metric"] == "sql_exec":
            sql, js = f"{result['tuned']['score']:.1%}", "-"
        else:
            sql = f"{prev['before']:.1%} -> {prev['after']:.1%}" if prev else "-"
            js = f"{result['tuned']['score']:.1%} (base {result['base']['score']:.1%})"
        scored = f.get("kl_per_token") is not None  # None: no answer tokens, no verdict
        loss = f"{f['base_loss']:.3f} -> {f['tuned_loss']:.3f}" if scored else "-"
        kl = f"{f['kl_per_token']:.3f}" if scored else "-"
        print(f"| {label} | {sql} | {js} | {kl} | {loss} | {(f.get('verdict') or 'no verdict').split(':')[0]} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/forgetting"))
