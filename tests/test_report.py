"""The run report: metrics as tables (not key = value walls), no per-prediction rows, small page."""
from __future__ import annotations

import json
from html.parser import HTMLParser

from galclip.report import ReportConfig, run_report


class _Tables(HTMLParser):
    """Collects each <table> as a list of rows of cell texts, and the <h2> headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_h2:
            self.headings[-1] += data


def _run(tmp_path):
    run = tmp_path / "run"
    for d in ("pretrain", "finetune", "evaluate", "candidates"):
        (run / d).mkdir(parents=True)
    (run / "pretrain" / "metrics.json").write_text(json.dumps(
        {"model": "compact", "steps": 250, "val/i2s_top1": 0.15, "val/knn_merger_bacc_image": 0.61,
         **{f"val/knn_param{i}_r2_image": 0.1 for i in range(40)}}))
    (run / "finetune" / "metrics.json").write_text(json.dumps(
        {"test": {"both": {"roc_auc": 0.8, "balanced_accuracy": 0.7, "n": 600, "n_positive": 72},
                  "image_only": {"roc_auc": 0.75, "balanced_accuracy": 0.68, "n": 600, "n_positive": 72}}}))
    summary = [{"method": m, "budget": b, "roc_auc_mean": 0.6 + 0.01 * b / 10, "roc_auc_std": 0.02}
               for m in ("galclip_fusion", "morphology_lr", "random_init") for b in (10, 100, 1000)]
    (run / "evaluate" / "results.json").write_text(json.dumps(
        {"summary": summary, "headline": {"galclip_fusion@100": 0.7, "morphology_lr@100": 0.65}}))
    # thousands of per-object predictions: the old report listed these as text
    (run / "evaluate" / "predictions.csv").write_text("method,budget,seed,index,p_merger,predicted\n" + "".join(
        f"galclip_fusion,10,0,{i},0.5,0\n" for i in range(5000)))
    (run / "timings.json").write_text(json.dumps({"pretrain": 61.3, "evaluate": 70.1}))
    (run / "candidates" / "candidates.csv").write_text("rank,object_id,ra,dec,score\n1,a,1.0,2.0,0.9\n")
    (run / "candidates" / "summary.json").write_text(json.dumps(
        {"precision_at": {"top10": 0.5, "top20": 0.4, "base_rate": 0.1}}))
    return run


def test_report_renders_metric_tables_and_stays_small(tmp_path):
    path = run_report(ReportConfig(run=str(_run(tmp_path))))
    text = path.read_text()
    assert len(text.encode()) < 100_000 and "labels: |" not in text and "steps = " not in text
    p = _Tables()
    p.feed(text)
    assert {"Pretraining (validation)", "Fine-tuned head (test split)", "Label-budget evaluation",
            "Headline comparison", "Stage timings"} <= set(p.headings)
    budget = next(t for t in p.tables if t[0][0] == "method (ROC AUC)")
    assert budget[0] == ["method (ROC AUC)", "10 labels", "100 labels", "1000 labels"]
    assert [r[0] for r in budget[1:]] == ["galclip_fusion", "morphology_lr", "random_init"]  # one row per method
    assert budget[2][2] == "0.700 ± 0.020"
    pre = next(t for t in p.tables if t[0] == ["metric", "value"])
    names = [r[0] for r in pre[1:]]
    assert names[:2] == ["model", "steps"] and "knn_merger_bacc_image" in names and len(names) < 10
    assert any(r[-1] == "a" or "a" in r for t in p.tables for r in t)  # the candidate table
    prec = next(t for t in p.tables if t[0] == ["top N", "precision", "× base rate"])
    assert prec[2][0] == "top20" and float(prec[2][2]) == 4.0  # precision@20 as a multiple of the base rate


def test_known_labels_name_the_class_and_stage(tiny_dataset):
    from galclip.gallery import known_labels

    got = known_labels(tiny_dataset, ["obj000", "obj001", "missing"])
    assert got == ["merger (isolated)", "not a merger (projected_pair)", "unlabelled"]


def test_candidate_table_shows_the_zero_label_asymmetry_column(tmp_path):
    run = _run(tmp_path)
    (run / "candidates" / "summary.json").write_text(json.dumps(
        {"precision_at_draws": {"top20_mean": 0.5, "top20_std": 0.1, "base_rate_mean": 0.1, "draws": 10, "n_known": 10},
         "zero_label_asymmetry_precision": {"top20_mean": 0.09, "base_rate_mean": 0.1, "draws": 10}}))
    p = _Tables()
    p.feed(run_report(ReportConfig(run=str(run))).read_text())
    prec = next(t for t in p.tables if t[0][0] == "top N")
    assert prec[0][-1] == "precision ranking by asymmetry alone (zero labels)"
    assert prec[1][0] == "top20" and float(prec[1][2]) == 5.0 and float(prec[1][3]) == 0.09
