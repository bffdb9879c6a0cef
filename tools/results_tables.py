"""Write the results tables of README.md and docs/ from the data in results/*.csv.

    python tools/results_tables.py          # rewrite the tables in place
    python tools/results_tables.py --check  # exit 1 if a table differs from its data

A table is the text between ``<!-- table: KIND ARGS -->`` and ``<!-- end table -->``:

- ``shipped``: one row per shipped model (results/shipped.csv, sizes from the weights' manifest);
- ``runs DATASET [RUN ...]``: the runs of results/DATASET.csv (all, or those named);
- ``per-class CKPT_PATH TTA``: a per-class table of results/per_class.csv;
- ``csv NAME``: results/NAME.csv as it is.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MANIFEST = ROOT / "fer_lightning" / "pretrained" / "manifest.json"
DOCUMENTS = ("README.md", "docs/results.md")
TABLE = re.compile(r"(<!-- table: (.+?) -->\n)(.*?)(<!-- end table -->)", re.DOTALL)
TTA_MODES = ("none", "flip", "tencrop")
PREFIX = "pretrained:"


def read(name: str) -> list[dict[str, str]]:
    """The rows of results/<name>.csv."""
    with (RESULTS / f"{name}.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def members(ckpt_path: str) -> list[str]:
    """The shipped names a `ckpt_path` value uses (one, or an ensemble's list)."""
    return [item.removeprefix(PREFIX) for item in ckpt_path.strip("[]").split(",")]


def _table(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _tta(mode: str) -> str:
    return "each member's own" if mode == "members" else f"`{mode}`"


def shipped() -> str:
    """One row per shipped model: its net, size and PrivateTest scores with its own TTA."""
    runs = {row["run"]: row for row in read("fer2013")}
    sizes = {name: entry["size"] for name, entry in json.loads(MANIFEST.read_text()).items()}
    rows = []
    for model in read("shipped"):
        run = runs[model["run"]]
        size = sum(sizes[f"{name}.pt"] for name in members(model["ckpt_path"]))
        rows.append(
            [
                f"`{model['ckpt_path']}`",
                run["net"],
                f"{int(run['params']):,}",
                _tta(model["tta"]),
                model["privatetest_acc"],
                model["privatetest_f1"],
                f"{size / 1e6:.1f} MB ({model['dtype']})",
            ]
        )
    header = ["model", "net", "parameters", "TTA", "PrivateTest acc", "macro-F1", "file"]
    return _table(header, rows, ["---", "---", "---:", "---", "---:", "---:", "---:"])


def runs(dataset: str, names: list[str]) -> str:
    """Runs with their recipe, PublicTest per TTA mode (the chosen one in bold) and PrivateTest."""
    shipped_as = {
        row["run"]: "its members" if row["ckpt_path"].startswith("[") else f"`{row['ckpt_path']}`"
        for row in read("shipped")
    }
    rows = []
    for run in read(dataset):
        if names and run["run"] not in names:
            continue
        public = [
            f"**{run[f'publictest_{mode}']}**" if mode == run["tta"] else run[f"publictest_{mode}"]
            for mode in TTA_MODES
        ]
        epochs = f"{run['epochs']} ({run['best_epoch']})" if run["epochs"] else "—"
        no_tta = run["privatetest_acc_no_tta"]
        rows.append(
            [
                f"{run['run']}",
                f"`{run['recipe']}`",
                f"{int(run['params']):,}",
                epochs,
                " / ".join(public) if run["publictest_none"] else f"**{run['publictest_acc']}**",
                _tta(run["tta"]),
                f"**{run['privatetest_acc']}** / {run['privatetest_f1']}",
                f"{no_tta} / {run['privatetest_f1_no_tta']}" if no_tta else "—",
                shipped_as.get(run["run"], "—"),
            ]
        )
    header = [
        "run",
        "recipe",
        "parameters",
        "epochs (best)",
        "PublicTest none / flip / tencrop",
        "TTA chosen",
        "PrivateTest acc / macro-F1",
        "without TTA",
        "shipped as",
    ]
    return _table(header, rows, ["---", "---", "---:", "---:", "---", "---", "---:", "---:", "---"])


def per_class(ckpt_path: str, tta: str) -> str:
    """Precision, recall, F1 and support per class, then the macro average."""
    rows = [r for r in read("per_class") if r["ckpt_path"] == ckpt_path and r["tta"] == tta]
    table = [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in rows]
    macro = [sum(float(r[key]) for r in rows) / len(rows) for key in ("precision", "recall", "f1")]
    support = sum(int(r["support"]) for r in rows)
    table.append(["macro avg", *(f"{value:.4f}" for value in macro), f"{support:,}"])
    header = ["class", "precision", "recall", "F1", "support"]
    return _table(header, table, ["---", "---:", "---:", "---:", "---:"])


def plain(name: str) -> str:
    """results/<name>.csv as a table."""
    rows = read(name)
    header = list(rows[0])
    body = [[f"`{row[header[0]]}`", *(row[key] for key in header[1:])] for row in rows]
    return _table(header, body, ["---"] + ["---:"] * (len(header) - 1))


def render(spec: str) -> str:
    """The table a marker's spec names."""
    kind, *args = spec.split()
    if kind == "shipped":
        return shipped()
    if kind == "runs":
        return runs(args[0], args[1:])
    if kind == "per-class":
        return per_class(*args)
    if kind == "csv":
        return plain(args[0])
    raise ValueError(f"unknown table kind {kind!r} in <!-- table: {spec} -->")


def update(text: str) -> str:
    """`text` with every marked table regenerated from the data."""
    return TABLE.sub(lambda m: m[1] + render(m[2]) + m[4], text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables")
    args = parser.parse_args()
    stale = []
    for name in DOCUMENTS:
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        updated = update(text)
        if updated != text:
            stale.append(name)
            if not args.check:
                path.write_text(updated, encoding="utf-8")
    if stale:
        verb = "differ from results/*.csv" if args.check else "rewritten"
        print(f"{', '.join(stale)}: tables {verb}", file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
