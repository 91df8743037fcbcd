"""`skill demo` as a new user runs it: the whole job, and the two things it must show."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from skill.cli import app


@pytest.mark.slow
def test_demo_shows_skill_above_chance_and_fusion_ahead(tmp_path):
    from skill.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=tmp_path / "demo"), say=lambda line: None)
    assert result.best_above_chance, result.best
    assert result.fusion_beats_single_views, (result.best_fusion, result.best_single_view)
    official = json.loads(result.prediction_json.read_text())
    assert len(official["videos"]) == 200
    assert (result.sweep_dir / "sweep.csv").is_file() and result.predictions.is_file()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a demo folder" in result.output
    assert (tmp_path / "mine.txt").read_text() == "precious"
