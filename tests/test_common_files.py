"""Atomic writes (services/common/files.py): a reader, or a writer that fails midway, sees the old content
or the new, never half of it, and no temp is left behind."""

import pytest

from services.common.files import replacing, replacing_dir, write_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = write_atomic(tmp_path / "state.json", '{"step": 1}')
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_text('{"st')
        raise RuntimeError("killed midway")
    assert path.read_text() == '{"step": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with replacing(path) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path  # savers that add a missing suffix
        tmp.write_bytes(b'{"step": 2}')
    assert path.read_text() == '{"step": 2}'


def test_a_dir_is_replaced_whole_and_a_killed_writes_leftover_goes(tmp_path):
    dest = tmp_path / "step_0000003"
    with replacing_dir(dest) as tmp:
        (tmp / "a").write_text("old")
        (tmp / "b").write_text("old")
    (tmp_path / ".step_0000003.tmp").mkdir()  # what a SIGKILL during the next write leaves
    (tmp_path / ".step_0000003.tmp" / "half").write_text("x")
    with replacing_dir(dest) as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "a").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["a"] and (dest / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000003"]
    with pytest.raises(RuntimeError), replacing_dir(dest, shared=True) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("conversion failed")
    assert (dest / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [
        "step_0000003"
    ]
