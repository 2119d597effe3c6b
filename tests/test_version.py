"""The version the package reports is pyproject's."""
import pytest

import prunekit
from prunekit.cli import main

from tests.helpers import ROOT


def test_version_matches_pyproject(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    declared = [line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
                if line.startswith("version")][0]
    assert capsys.readouterr().out.strip() == f"prunekit {declared}" == f"prunekit {prunekit.__version__}"
