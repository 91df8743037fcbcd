"""What a sweep shows beside its overall numbers: a figure (sweep.png), the majority baseline
and chance, and top-1 per scenario, recomputed here from the runs' saved predictions."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from skill.cache.store import TokenStore
from skill.heads.config import FitConfig, SweepConfig
from skill.heads.sweep import sweep
from tests.token_store import SCENARIOS, shared_token_store

QUICK = dict(epochs=4, batch_size=16, lr=3e-3, hidden=16, patience=0, plots=True)
HEADS, VIEW_SETS, SEEDS = ["mean", "concat"], ["ego", "all"], [0, 1]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    store = shared_token_store(tmp_path_factory)
    base = FitConfig(store=str(store.path), out_dir=str(tmp_path_factory.mktemp("sw")), **QUICK)
    return store, sweep(SweepConfig(fit=base, heads=HEADS, view_sets=VIEW_SETS, seeds=SEEDS))


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # the whole file decodes, not only its header
        return image.size


def test_the_sweep_writes_a_figure(swept):
    _, result = swept
    width, height = _png_size(result.sweep_dir / "sweep.png")
    assert width > 300 and height > 200


def test_several_backbones_get_one_panel_each(swept, tmp_path):
    from skill.heads.plots import plot_sweep

    _, result = swept
    other = [{**row, "backbone": "clip"} for row in result.rows]
    one = [{**row, "backbone": "synthetic"} for row in result.rows]
    plot_sweep(one, tmp_path / "one.png")
    plot_sweep(one + other, tmp_path / "two.png")
    (w1, h1), (w2, h2) = _png_size(tmp_path / "one.png"), _png_size(tmp_path / "two.png")
    assert h1 == h2 and w2 > 1.4 * w1  # a second panel, one legend


def _truth(store_path: Path) -> dict[str, tuple[str, str]]:
    """take id -> (label name, scenario) from the store."""
    store = TokenStore.open(store_path)
    table, names = store.take_table(), list(store.task["schema"]["labels"])
    return {
        str(t): (names[int(label)] if label >= 0 else "", str(scenario))
        for t, label, scenario in zip(table.ids, table.target, table.scenario, strict=True)
    }


def _scenario_top1(run_dir: Path, split: str, truth: dict) -> dict[str, tuple[float, int]]:
    """(top-1, takes) per scenario of one run's saved predictions on `split`."""
    hits: dict[str, list[bool]] = {}
    with open(run_dir / "predictions.csv", newline="") as f:
        for line in csv.DictReader(f):
            label, scenario = truth[line["take"]]
            if line["split"] == split and label:
                hits.setdefault(scenario, []).append(line["predicted"] == label)
    return {name: (float(np.mean(values)), len(values)) for name, values in hits.items()}


def _markdown_section(markdown: str, split: str) -> list[list[str]]:
    """The cells of the per-scenario table of `split` (header first, separator dropped)."""
    section = markdown.split(f"{split} top1 per scenario")[1].split("\n\n", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [
        [c.strip() for c in line.strip("|").split("|")] for n, line in enumerate(lines) if n != 1
    ]


@pytest.mark.parametrize("split", ["val", "test"])
def test_the_markdown_has_top1_per_scenario_recomputed_from_the_predictions(swept, split):
    store, result = swept
    truth = _truth(store.path)
    header, *lines = _markdown_section((result.sweep_dir / "sweep.md").read_text(), split)
    names = [re.sub(r" \(n=\d+\)$", "", cell) for cell in header[2:]]
    counts = [re.findall(r"\(n=(\d+)\)$", cell) for cell in header[2:]]
    assert header[:2] == ["head", "views"] and names == sorted(SCENARIOS)
    assert [tuple(line[:2]) for line in lines] == [(h, v) for v in VIEW_SETS for h in HEADS]
    for head, views, *cells in lines:
        per_seed = [
            _scenario_top1(result.sweep_dir / f"{head}-{views}-s{seed}", split, truth)
            for seed in SEEDS
        ]
        for name, count, cell in zip(names, counts, cells, strict=True):
            # "mean ± std", with "(n=N)" when the view sets select different takes
            mean, std, n = re.fullmatch(r"(\S+) ± (\S+)(?: \(n=(\d+)\))?", cell).groups()
            values = [scores[name][0] for scores in per_seed]
            assert float(mean) == pytest.approx(np.mean(values), abs=5e-4), (head, views, name)
            assert float(std) == pytest.approx(np.std(values, ddof=1), abs=5e-4)
            assert int(n or count[0]) == per_seed[0][name][1]
    with open(result.sweep_dir / "sweep_scenarios.csv", newline="") as f:
        saved = [line for line in csv.DictReader(f) if line["split"] == split]
    assert len(saved) == len(lines) * len(names)


def test_the_table_has_the_majority_baseline_of_the_training_labels(swept):
    store, result = swept
    truth, classes = _truth(store.path), list(TokenStore.open(store.path).task["schema"]["labels"])
    run = result.sweep_dir / "mean-all-s0"
    record = json.loads((run / "config.json").read_text())
    train = [classes.index(truth[t][0]) for t in record["takes"]["train_ids"]]
    majority = classes[int(np.bincount(train, minlength=len(classes)).argmax())]  # ties: lower
    with open(run / "predictions.csv", newline="") as f:
        test = [truth[line["take"]][0] for line in csv.DictReader(f) if line["split"] == "test"]
    expected = float(np.mean([label == majority for label in test if label]))
    row = next(r for r in result.rows if (r["head"], r["views"]) == ("mean", "all"))
    assert row["test_majority_top1"] == pytest.approx(expected)
    assert row["chance"] == pytest.approx(0.25)
    header = (result.sweep_dir / "sweep.md").read_text().splitlines()[0]
    assert "test majority top1" in header and "chance" in header
    with open(result.sweep_dir / "sweep.csv", newline="") as f:
        saved = next(r for r in csv.DictReader(f) if (r["head"], r["views"]) == ("mean", "all"))
    assert float(saved["chance"]) == pytest.approx(0.25)
    assert float(saved["test_majority_top1"]) == pytest.approx(expected, abs=1e-5)


def test_the_console_table_prints_the_majority_baseline_per_view_set(swept, monkeypatch):
    import io

    from rich.console import Console

    import skill.cli

    _, result = swept
    monkeypatch.setattr(skill.cli, "out", Console(file=io.StringIO(), width=200))
    skill.cli.print_sweep_table(result.rows)
    text = " ".join(skill.cli.out.file.getvalue().split())
    rows = {row["views"]: row for row in result.rows}
    assert rows["ego"]["n_test"] != rows["all"]["n_test"]  # ego leaves out takes without it
    for views, row in rows.items():
        figures = f"val {row['val_majority_top1']:.3f}, test {row['test_majority_top1']:.3f}"
        assert f"{figures} on {views}" in text
    assert "chance 0.250" in text
