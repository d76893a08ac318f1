from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.science import corpora


def test_the_environment_variable_names_the_corpora(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(corpora.ENV_VAR, str(tmp_path))
    assert corpora.corpora_dir() == tmp_path


def test_without_it_the_shared_folder_beside_the_checkout_or_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(corpora.ENV_VAR, raising=False)
    found = corpora.corpora_dir()
    assert found.parts[-3:] == ("shared", "data", "corpora")
    beside_checkout = Path(corpora.__file__).resolve().parents[3].parent / "shared" / "data" / "corpora"
    if not beside_checkout.is_dir():  # an installed package: the current folder's ../shared is tried next
        (tmp_path / "shared" / "data" / "corpora").mkdir(parents=True)
        (tmp_path / "work").mkdir()
        monkeypatch.chdir(tmp_path / "work")
        assert corpora.corpora_dir() == (tmp_path / "shared" / "data" / "corpora").resolve()
    else:
        assert found == beside_checkout
