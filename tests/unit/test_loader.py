"""BatchLoader: whole-slice batches over in-memory tensors."""

import pytest
import torch

from dlrun.data.loader import BatchLoader


def _loader(n=10, batch_size=4, shuffle=False, seed=0):
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10  # row i holds 10 * i
    y = torch.arange(n)
    return BatchLoader(x, y, batch_size, shuffle=shuffle, seed=seed)


def _epoch(loader) -> list[int]:
    """The row order of one pass, checking that each x stays paired with its y."""
    order = []
    for x, y in loader:
        assert torch.equal(x[:, 0], y.float() * 10)
        order.extend(y.tolist())
    return order


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,batch_size", [(10, 4), (12, 4), (3, 8), (1, 1), (7, 1)])
def test_every_row_exactly_once_per_epoch(shuffle, n, batch_size):
    loader = _loader(n, batch_size, shuffle)
    for _ in range(3):
        assert sorted(_epoch(loader)) == list(range(n))


@pytest.mark.parametrize("shuffle", [False, True])
def test_batch_sizes_and_len(shuffle):
    loader = _loader(10, 4, shuffle)
    sizes = [len(x) for x, _ in loader]
    assert sizes == [4, 4, 2]
    assert len(loader) == 3 == len(sizes)


@pytest.mark.parametrize("n,batch_size,expected", [(12, 4, 3), (13, 4, 4), (3, 8, 1), (0, 4, 0), (5, 1, 5)])
def test_len_is_the_number_of_batches(n, batch_size, expected):
    loader = _loader(n, batch_size)
    assert len(loader) == expected
    assert sum(1 for _ in loader) == expected


def test_batches_keep_the_feature_shape():
    x = torch.randn(9, 1, 8, 8)
    batches = list(BatchLoader(x, torch.zeros(9, dtype=torch.long), 4, shuffle=True))
    assert [tuple(b.shape) for b, _ in batches] == [(4, 1, 8, 8), (4, 1, 8, 8), (1, 1, 8, 8)]


def test_no_shuffle_keeps_order_every_epoch():
    loader = _loader(10, 3)
    assert _epoch(loader) == list(range(10))
    assert _epoch(loader) == list(range(10))


def test_shuffle_changes_the_order():
    assert _epoch(_loader(50, 8, shuffle=True)) != list(range(50))


def test_shuffle_order_is_repeatable_for_the_same_seed():
    a, b = _loader(50, 8, shuffle=True, seed=3), _loader(50, 8, shuffle=True, seed=3)
    for _ in range(3):
        assert _epoch(a) == _epoch(b)


def test_shuffle_order_differs_across_epochs():
    loader = _loader(50, 8, shuffle=True, seed=3)
    orders = [tuple(_epoch(loader)) for _ in range(4)]
    assert len(set(orders)) == 4


def test_shuffle_order_differs_across_seeds():
    assert _epoch(_loader(50, 8, shuffle=True, seed=1)) != _epoch(_loader(50, 8, shuffle=True, seed=2))


def test_shuffle_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _epoch(_loader(20, 4, shuffle=True, seed=5))
    assert torch.equal(torch.rand(3), expected)


def test_shuffle_order_does_not_depend_on_the_global_rng():
    torch.manual_seed(1)
    first = _epoch(_loader(30, 4, shuffle=True, seed=9))
    torch.manual_seed(2)
    assert _epoch(_loader(30, 4, shuffle=True, seed=9)) == first


def test_under_ddp_each_rank_trains_an_equal_disjoint_share_of_each_epoch():
    import torch

    from dlrun.data.loader import BatchLoader

    x = torch.arange(103, dtype=torch.float32).unsqueeze(1)
    shares = []
    for rank in range(2):
        loader = BatchLoader(x, torch.zeros(103), batch_size=10, shuffle=True, seed=7, progress=_Rank(rank, 2))
        assert len(loader) == 6  # 51 rows each: the odd row out is left for another epoch
        shares.append(torch.cat([batch for batch, _ in loader]).flatten().tolist())
    assert len(shares[0]) == len(shares[1]) == 51
    assert not set(shares[0]) & set(shares[1])


class _Rank:
    """The progress of a rank that has trained nothing yet."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def position(self) -> tuple[int, int]:
        return 0, 0

    def epoch(self) -> int:
        return 0

    def shard(self) -> tuple[int, int]:
        return self.rank, self.world
