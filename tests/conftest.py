import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_global_policy():
    """Tests that switch mixed precision on leave the next test in float32."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def _applies(item, backend):
    """Whether `item` runs in this backend's pass (markers are described in pyproject.toml)."""
    if backend == "tensorflow":
        return True
    if any(item.get_closest_marker(name) for name in ("tensorflow", "all_backends", "slow")):
        return False
    return not (backend == "torch" and item.get_closest_marker("not_torch"))


def pytest_collection_modifyitems(config, items):
    # Each backend's pass deselects what does not apply to it, so one plain `pytest` per
    # backend runs the whole suite that backend needs, with no list of files anywhere.
    backend = keras.backend.backend()
    kept = [item for item in items if _applies(item, backend)]
    if len(kept) < len(items):
        kept_ids = {id(item) for item in kept}
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept_ids])
        items[:] = kept
