"""The test fixtures' own rules: which PostgreSQL they use, and that under CI a missing
required part fails instead of skipping."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hubfix import find_pg_bin, missing_part


def _release(root: Path, name: str, *programs: str) -> Path:
    bin_dir = root / name / "bin"
    bin_dir.mkdir(parents=True)
    for program in programs:
        (bin_dir / program).touch()
    return bin_dir


def test_the_newest_complete_postgresql_release_is_used(tmp_path: Path) -> None:
    _release(tmp_path, "9", "initdb", "pg_ctl")
    fifteen = _release(tmp_path, "15", "initdb", "pg_ctl")
    _release(tmp_path, "17", "initdb")  # no pg_ctl: not usable
    _release(tmp_path, "latest", "initdb", "pg_ctl")  # not a release number
    assert find_pg_bin(tmp_path) == fifteen
    sixteen = _release(tmp_path, "16", "initdb", "pg_ctl")
    assert find_pg_bin(tmp_path) == sixteen  # 16 > 15 > 9, compared as numbers


def test_no_postgresql_release_is_none(tmp_path: Path) -> None:
    assert find_pg_bin(tmp_path) is None
    _release(tmp_path, "15", "pg_ctl")
    assert find_pg_bin(tmp_path) is None


def test_a_missing_part_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    # BaseException: a skip raised here must fail this test, not skip it.
    with pytest.raises(BaseException) as raised:
        missing_part("PostgreSQL is not installed")
    assert raised.type is pytest.fail.Exception
    assert "PostgreSQL is not installed" in str(raised.value)


def test_a_missing_part_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(BaseException) as raised:
        missing_part("PostgreSQL is not installed")
    assert raised.type is pytest.skip.Exception
    assert "PostgreSQL is not installed" in str(raised.value)
