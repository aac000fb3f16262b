"""The markers decide which backend's pass runs a test (tests/conftest.py, pyproject.toml)."""

import pytest
from conftest import _applies


class Item:
    def __init__(self, *markers):
        self.markers = markers

    def get_closest_marker(self, name):
        return name if name in self.markers else None


@pytest.mark.parametrize(("markers", "passes"), [
    ((), {"tensorflow", "jax", "torch"}),
    (("tensorflow",), {"tensorflow"}),
    (("all_backends",), {"tensorflow"}),
    (("slow",), {"tensorflow"}),
    (("not_torch",), {"tensorflow", "jax"}),
])
def test_each_marker_keeps_a_test_in_the_passes_it_applies_to(markers, passes):
    assert {backend for backend in ("tensorflow", "jax", "torch")
            if _applies(Item(*markers), backend)} == passes


def test_every_marker_used_by_the_conftest_is_registered(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"tensorflow", "all_backends", "slow", "not_torch"} <= registered
