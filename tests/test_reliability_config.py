"""Bad config input is one line naming the file or the --set item, with nothing written."""

from __future__ import annotations

import pytest

from conftest import TINY
from testbed.cli import main

SET_CASES = {
    "strategies.9.bits=4": "strategies is a list; '9' is not one of its indices (0-2)",
    "strategies.x.bits=4": "strategies is a list; 'x' is not one of its indices (0-2)",
    "a..b=1": "empty key part in 'a..b'",
    "=3": "empty key part in ''",
    "rounds.x=1": "rounds is a value (2), not a section with keys",
    "model.width.x.y=1": "model.width is a value (4), not a section with keys",
    "rounds": "expected key=value",
    "rounds=[1,": "the value is not valid YAML",
}

FILE_CASES = {  # file contents -> (line, what is said)
    b"name: x\nrounds: 2\nseed: 1\nrounds: 3\n": "line 4: not valid YAML (duplicate key 'rounds' (first on line 2))",
    b"name: x\nmodel:\n  arch: deepcnn\n  arch: monocnn\n": "line 4: not valid YAML (duplicate key 'arch' (first on line 3))",
    b"name: x\n# caf\xe9\n": "line 2: not UTF-8 text (byte 0xe9)",
}


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("item", list(SET_CASES))
def test_a_bad_set_item_is_one_line_and_nothing_is_written(tmp_path, capsys, item):
    out = tmp_path / "run"
    err = _one_line_error(capsys, ["run", str(TINY), "--out", str(out), "--quiet", "--set", item])
    assert f"--set {item!r}: {SET_CASES[item]}" in err
    assert not out.exists()


@pytest.mark.parametrize("text", list(FILE_CASES), ids=range(len(FILE_CASES)))
def test_a_bad_config_file_is_one_line_naming_the_file_and_line(tmp_path, capsys, text):
    config = tmp_path / "bad.yaml"
    config.write_bytes(text)
    out = tmp_path / "run"
    err = _one_line_error(capsys, ["run", str(config), "--out", str(out), "--quiet"])
    assert f"{config} {FILE_CASES[text]}" in err
    assert not out.exists()


def test_overrides_still_reach_list_entries_and_new_keys():
    from testbed.config import apply_overrides

    tree = {"strategies": [{"bits": 8}], "model": {}}
    apply_overrides(tree, ["strategies.0.bits=4", "model.train.epochs=2"])
    assert tree == {"strategies": [{"bits": 4}], "model": {"train": {"epochs": 2}}}
