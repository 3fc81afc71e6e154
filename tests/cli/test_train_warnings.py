"""`botserver train`: what it says of the files it reads, once."""

from __future__ import annotations

from pathlib import Path


def test_each_reader_warning_is_printed_once(run_cli, starter_copy: Path) -> None:
    """Before, validation and training each read the files, so every warning of the NLU
    reader (a blank line in a `|` block, a line indented more than the block) was printed
    twice. Now training trains the project validation read."""
    (starter_copy / "data" / "more_nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n'
        "    - hi there\n\n    - hello there\n      - indented\n"
    )
    result = run_cli("train", "--force", cwd=starter_copy)
    assert result.code == 0, result.err
    assert "Your model is trained" in result.out
    blank = "data/more_nlu.yml:6: a blank line among the examples"
    indented = "data/more_nlu.yml:8: training example '- indented' starts with spaces"
    assert result.err.count(blank) == 1, result.err
    assert result.err.count(indented) == 1, result.err
