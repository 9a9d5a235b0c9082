"""The natural host name key the server stores and sorts by: NAS2 before NAS10, case ignored."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exposure_guard_server.naturalsort import hostname_key


def test_examples() -> None:
    names = ["nas10", "NAS2", "nas1", "Backup", "nas1-2", "NAS100", "nas01a"]
    assert sorted(names, key=hostname_key) == ["Backup", "nas1", "nas1-2", "nas01a", "NAS2", "nas10", "NAS100"]


@given(st.text(alphabet="ab-.", max_size=6), st.integers(0, 10**15), st.integers(0, 10**15),
       st.text(alphabet="ab-.09", max_size=6))
def test_numbers_in_the_same_place_compare_as_numbers(prefix: str, x: int, y: int, suffix: str) -> None:
    kx, ky = hostname_key("%s%d%s" % (prefix, x, suffix)), hostname_key("%s%d%s" % (prefix, y, suffix))
    assert (kx < ky) == (x < y) and (kx == ky) == (x == y)


@given(st.text(max_size=20))
def test_case_is_ignored(name: str) -> None:
    assert hostname_key(name) == hostname_key(name.casefold()) == hostname_key(name.casefold().upper().casefold())
