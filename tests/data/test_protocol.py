import pytest
import torch

from viny_probe.data.protocol import make_split
from viny_probe.errors import VinyError

PETS_POOL = 7349  # Oxford-IIIT Pet trainval + test


def test_test_set_is_fixed_whatever_the_train_size() -> None:
    split = make_split(PETS_POOL, 1000, seed=0)
    again = make_split(PETS_POOL, 1000, seed=0)
    assert split.test.shape == (1000,) and split.test.dtype == torch.int64
    assert torch.equal(split.test, again.test)
    for n in (250, 500, 1000, 6000):
        train = split.train(n)
        assert train.shape == (n,)
        assert torch.equal(again.test, split.test)  # asking for a train size changes nothing
        assert not set(train.tolist()) & set(split.test.tolist())


def test_train_subsets_are_nested() -> None:
    split = make_split(PETS_POOL, 1000, seed=1)
    sizes = [250, 500, 1000, 2000, 4000, 6000]
    for small, big in zip(sizes, sizes[1:], strict=False):
        assert torch.equal(split.train(big)[:small], split.train(small))


def test_test_and_pool_partition_the_dataset() -> None:
    split = make_split(50, 10, seed=0)
    everything = torch.cat([split.test, split.pool]).sort().values
    assert torch.equal(everything, torch.arange(50))
    assert len(split.pool) == 40


def test_seed_changes_the_test_set() -> None:
    tests = [set(make_split(PETS_POOL, 1000, seed=s).test.tolist()) for s in range(3)]
    assert tests[0] != tests[1] != tests[2] != tests[0]


def test_same_seed_gives_the_same_split_on_every_machine() -> None:
    # Pinned output of torch.randperm(10, generator=torch.Generator().manual_seed(0)): if torch ever
    # changes its CPU generator, published splits would move, and this test says so.
    split = make_split(10, 3, seed=0)
    assert split.test.tolist() == [1, 4, 7]
    assert split.pool.tolist() == [5, 3, 9, 0, 8, 6, 2]


def test_too_many_training_images_reports_the_counts() -> None:
    split = make_split(1200, 1000, seed=0)
    with pytest.raises(VinyError) as info:
        split.train(250)
    message = str(info.value)
    assert "1200 images" in message and "takes 1000" in message and "200" in message


def test_test_set_bigger_than_dataset_reports_the_counts() -> None:
    with pytest.raises(VinyError, match=r"takes 1000 images.*only 800"):
        make_split(800, 1000, seed=0)


@pytest.mark.parametrize("n", [0, -5, 2.5])
def test_train_size_must_be_positive_integer(n) -> None:
    with pytest.raises(VinyError):
        make_split(100, 10).train(n)


def test_zero_test_size_gives_a_plain_seeded_order() -> None:
    split = make_split(20, 0, seed=5)
    assert len(split.test) == 0 and sorted(split.pool.tolist()) == list(range(20))
