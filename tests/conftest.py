import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep every cache the tests create (decoded datasets, embeddings) out of the user's home."""
    os.environ["VINY_CACHE_DIR"] = str(tmp_path_factory.mktemp("viny-cache"))
    os.environ.pop("VINY_DATA_ROOT", None)
    yield


@pytest.fixture
def tiny_train_args():
    """`viny train` options for a tiny CPU run (model tiny, 16 training and 8 test images, batch 8), in
    fp32: the command's default "auto" is bf16 on a CPU with native bf16, and the tests compare with
    library runs, whose default is fp32, on every machine alike."""

    def make(epochs: int = 1) -> list[str]:
        sizes = ["--batch-size", "8", "--train-size", "16", "--test-size", "8"]
        return [
            "--model",
            "tiny",
            "--epochs",
            str(epochs),
            *sizes,
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "-q",
        ]

    return make
