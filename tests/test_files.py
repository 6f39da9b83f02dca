"""What every record says about the code that made it."""
import subprocess

import pytest

from ffhw import files


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    (tmp_path / "ffhw").mkdir()
    (tmp_path / "ffhw" / "train.py").write_text("step = 1\n")
    (tmp_path / "experiments" / "results" / "study").mkdir(parents=True)
    (tmp_path / "experiments" / "results" / "study" / "REPORT.md").write_text("old\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    monkeypatch.setattr(files, "repo_root", lambda: tmp_path)
    return tmp_path


def test_a_rewritten_study_report_leaves_the_code_clean(checkout):
    (checkout / "experiments" / "results" / "study" / "REPORT.md").write_text("regenerated mid-run\n")
    info = files.code_version()
    assert len(info["commit"]) == 40 and info["dirty"] is False


def test_an_edited_source_file_makes_the_code_dirty(checkout):
    (checkout / "ffhw" / "train.py").write_text("step = 2\n")
    assert files.code_version()["dirty"] is True


def test_records_name_the_code_a_process_started_with(checkout):
    """A source edited while a long run trains does not make that run's records dirty: they name the code it
    loaded (pinned when training starts), while code_version() still sees the edit."""
    files.process_code.cache_clear()
    try:
        started = files.process_code()
        (checkout / "ffhw" / "train.py").write_text("step = 3\n")
        assert files.code_version()["dirty"] is True
        assert files.process_code() == started and started["dirty"] is False
    finally:
        files.process_code.cache_clear()
