import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep every cache the tests create (decoded datasets, embeddings) out of the user's home."""
    os.environ["VINY_CACHE_DIR"] = str(tmp_path_factory.mktemp("viny-cache"))
    os.environ.pop("VINY_DATA_ROOT", None)
    yield
