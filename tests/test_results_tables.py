"""Results are data (results/*.csv): the tables in README.md and docs/results.md are generated from
it, and the data obeys the protocol (the TTA chosen on PublicTest, scores that agree)."""

from __future__ import annotations

import importlib.util
import shlex

import pytest

from fer_lightning.checkpoint import pretrained_names
from tests.conftest import ROOT
from tests.test_pretrained import SHIPPED_RECIPES


def _tables_module():
    path = ROOT / "tools" / "results_tables.py"
    spec = importlib.util.spec_from_file_location("results_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _tables_module()
RUNS = {dataset: tables.read(dataset) for dataset in ("fer2013", "ferplus")}
FER2013 = {run["run"]: run for run in RUNS["fer2013"]}
SHIPPED = tables.read("shipped")


@pytest.mark.parametrize("document", tables.DOCUMENTS)
def test_the_tables_are_the_ones_the_data_gives(document):
    text = (ROOT / document).read_text(encoding="utf-8")
    assert tables.TABLE.search(text), f"{document} has no generated table"
    assert tables.update(text) == text, f"{document}: run `python tools/results_tables.py`"


def test_a_marked_table_is_rewritten_from_its_csv():
    stale = "before\n<!-- table: csv class_weighting -->\n| old |\n<!-- end table -->\nafter\n"
    updated = tables.update(stale)
    assert "| old |" not in updated
    assert updated.startswith("before\n<!-- table: csv class_weighting -->\n| class_weighting |")
    assert "| `sqrt` | 0.5899 | 0.5386 | 0.39 |\n<!-- end table -->\nafter\n" in updated
    with pytest.raises(ValueError, match="unknown table kind 'nope'"):
        tables.update("<!-- table: nope -->\n<!-- end table -->")


@pytest.mark.parametrize(
    "run", [run for runs in RUNS.values() for run in runs], ids=lambda run: run["run"]
)
def test_each_run_reports_the_tta_it_chose_on_publictest(run):
    if run["tta"] == "members":  # an ensemble: each member carries the mode chosen for it
        assert not run["publictest_none"]
        return
    public = {mode: float(run[f"publictest_{mode}"]) for mode in tables.TTA_MODES}
    assert run["tta"] == max(public, key=public.get)
    assert float(run["publictest_acc"]) == public[run["tta"]]
    assert int(run["best_epoch"]) <= int(run["epochs"])


def test_the_shipped_models_are_the_shipped_files():
    single = [row for row in SHIPPED if not row["ckpt_path"].startswith("[")]
    assert sorted(tables.members(row["ckpt_path"])[0] for row in single) == pretrained_names()
    assert all(row["ckpt_path"] == f"pretrained:{row['run']}" for row in single)
    for row in SHIPPED:
        assert set(tables.members(row["ckpt_path"])) <= set(pretrained_names())


@pytest.mark.parametrize("row", SHIPPED, ids=lambda row: row["run"])
def test_a_shipped_file_scores_what_its_run_scored(row):
    run = FER2013[row["run"]]
    assert row["tta"] == run["tta"]
    names = tables.members(row["ckpt_path"])
    if len(names) > 1:  # an ensemble's parameters are its members'
        assert int(run["params"]) == sum(int(FER2013[name]["params"]) for name in names)
    # fp16 may move PrivateTest by less than 0.1 points; fp32 files are the run's own weights
    tolerance = 0.001 if "fp16" in row["dtype"] else 0
    for key in ("privatetest_acc", "privatetest_f1"):
        assert abs(float(row[key]) - float(run[key])) <= tolerance, key


@pytest.mark.parametrize("name", sorted(SHIPPED_RECIPES))
def test_a_shipped_runs_recipe_is_the_one_its_weights_were_trained_with(name):
    # test_pretrained checks SHIPPED_RECIPES against the run config stored in each file
    assert tuple(shlex.split(FER2013[name]["recipe"])) == SHIPPED_RECIPES[name]


def test_per_class_tables_add_up_to_the_reported_scores():
    rows = tables.read("per_class")
    scores = {(row["ckpt_path"], row["tta"]): row for row in SHIPPED}
    for ckpt_path, tta in {(row["ckpt_path"], row["tta"]) for row in rows}:
        classes = [row for row in rows if (row["ckpt_path"], row["tta"]) == (ckpt_path, tta)]
        # with the file's own TTA: the shipped scores; without TTA: the run's
        scored = scores.get((ckpt_path, tta))
        if scored is None:
            assert tta == "none"
            run = FER2013[tables.members(ckpt_path)[0]]
            accuracy, f1 = run["privatetest_acc_no_tta"], run["privatetest_f1_no_tta"]
        else:
            accuracy, f1 = scored["privatetest_acc"], scored["privatetest_f1"]
        support = sum(int(row["support"]) for row in classes)
        correct = sum(round(float(row["recall"]) * int(row["support"])) for row in classes)
        assert support == 3589
        assert correct / support == pytest.approx(float(accuracy), abs=5e-5)
        macro_f1 = sum(float(row["f1"]) for row in classes) / len(classes)
        assert macro_f1 == pytest.approx(float(f1), abs=1e-4)
