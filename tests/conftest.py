"""Suite-wide: evaluations cache image features in a per-session temporary folder, never in ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANCHOROPT_FEATURE_CACHE", str(tmp_path_factory.mktemp("feature_cache")))
        yield
