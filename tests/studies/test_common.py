"""Helpers every study report shares."""
from pathlib import Path

from ffhw.studies.common import report_command


def test_report_command_is_relative_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "experiments" / "results" / "trifecta-ablation-spiking"
    assert report_command(study) == "python -m ffhw.run study --report experiments/results/trifecta-ablation-spiking"


def test_report_command_keeps_a_path_outside_the_working_directory(tmp_path, monkeypatch):
    inside = tmp_path / "here"
    inside.mkdir()
    monkeypatch.chdir(inside)
    outside = tmp_path / "elsewhere" / "study"
    assert report_command(outside) == f"python -m ffhw.run study --report {outside.as_posix()}"
    assert report_command(Path("runs/x")) == "python -m ffhw.run study --report runs/x"
