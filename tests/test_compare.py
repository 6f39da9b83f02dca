import json

from ffhw.run import main

TINY = ["--hidden", "2x40", "--epochs", "1", "--train-subset", "400", "--set", "data.val_size=200", "--quiet"]


def test_compare_trains_variants_resumes_and_reports_from_records(tmp_path, capsys):
    argv = ["compare", *TINY, "--only", "standard,quantized-4", "--out", str(tmp_path), "--name", "c"]
    assert main(argv) == 0
    root = tmp_path / "c"
    entries = json.loads((root / "comparison.json").read_text())
    assert [e["variant"] for e in entries] == ["standard", "quantized-4"]  # definition order
    assert entries[1]["weight_bits"] == 4 and entries[0]["parameters"] == entries[1]["parameters"] - 4
    assert entries[1]["deployed_weight_bytes"] < entries[0]["deployed_weight_bytes"] / 6
    assert all(e["test_acc_goodness"] > 0.1 for e in entries)
    capsys.readouterr()
    before = (root / "standard" / "metrics.csv").read_bytes()
    assert main(argv) == 0  # a finished comparison is kept, not retrained
    assert "complete, kept" in capsys.readouterr().out
    assert (root / "standard" / "metrics.csv").read_bytes() == before
    (root / "comparison.json").unlink()
    assert main(["compare", "--report", str(root)]) == 0
    assert json.loads((root / "comparison.json").read_text()) == entries
    assert main(["compare", *TINY, "--only", "quantized-8", "--out", str(tmp_path), "--name", "c"]) == 0
    from ffhw.config import load_toml
    assert list(load_toml(root / "variants.toml")["variants"]) == ["standard", "quantized-4", "quantized-8"]


def test_compare_rejects_unknown_variant(tmp_path, capsys):
    assert main(["compare", *TINY, "--only", "analog", "--out", str(tmp_path)]) == 2
    assert "unknown variant(s) analog" in capsys.readouterr().err
