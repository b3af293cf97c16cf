"""Which project the index lists a package file under: pypiserver's guess from its name."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", [
    "foo_bar-1.0-py3-none-any.whl", "Foo.Bar-2.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", "a-1-b.whl",
    "a-b-c-d-e.whl", "a-1.0-py3-none-any.whl", "x.whl", ".whl", "a2-3.0-py2.py3-none-any.whl",
    "name-with-dash-1.0-py3-none-any.whl", "p-1.0-py3-none-any.whl.asc", "p-1.0.tar.gz", "p-1.0.zip",
    "Some_Pkg-0.1.dev3+local-py3-none-any.whl", "p-x.0-py3-none-any.whl", "p--1.0-py3-none-any.whl",
])
def test_the_index_groups_a_file_under_the_project_pypiserver_guesses(name: str) -> None:
    """The index's quick path for wheel names gives pypiserver's own guess (normalized), or
    none where pypiserver lists none: a file is listed under the same project either way."""
    from pypiserver.core import normalize_pkgname
    from pypiserver.pkg_helpers import guess_pkgname_and_version

    from gcs_sync.web.index import _project_of

    guessed = guess_pkgname_and_version(name)
    assert _project_of(name) == (None if guessed is None else normalize_pkgname(guessed[0]))
