"""Suite-wide: evaluations cache image features in a per-session temporary folder, never in ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANCHOROPT_FEATURE_CACHE", str(tmp_path_factory.mktemp("feature_cache")))
        yield


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory: pytest.TempPathFactory):
    """The toy world's small copy (tests/support/toyworld_runs.py), built once per session and worker process for
    the files that use it."""
    from tests.support.toyworld_runs import build_test_world

    return build_test_world(tmp_path_factory)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with end-to-end (``slow``) tests run first. With worker processes (pytest-xdist, one file per worker
    at a time) the long files then start at once and the short ones fill in beside them, instead of a long file
    starting last and running alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within each file is kept
