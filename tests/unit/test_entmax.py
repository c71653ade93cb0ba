"""The numpy-sorted entmax-1.5 equals pytorch-tabnet's, outputs and gradients, bit for bit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
sparsemax = pytest.importorskip("pytorch_tabnet.sparsemax")

from l2vol.models._entmax import Entmax15, Entmax15Function, threshold_and_support, use_fast_entmax  # noqa: E402


def _inputs():
    g = torch.Generator().manual_seed(7)
    for rows, d in ((2048, 49), (256, 49), (33, 5), (1, 3)):
        for scale in (0.05, 0.5, 2.0, 20.0):
            yield torch.randn(rows, d, generator=g) * scale
    tied = torch.randn(64, 12, generator=g).round()  # many equal values per row
    yield tied
    yield torch.zeros(4, 7)  # one tie across the whole row
    yield torch.randn(49, 300, generator=g).t()  # not contiguous


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradient_equal_pytorch_tabnet(dtype):
    for x in _inputs():
        x = x.to(dtype)
        ours = x.clone().requires_grad_(True)
        theirs = x.clone().requires_grad_(True)
        y1 = Entmax15Function.apply(ours, -1)
        y2 = sparsemax.Entmax15Function.apply(theirs, -1)
        assert torch.equal(y1, y2), (x.shape, dtype)
        w = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        assert torch.equal(ours.grad, theirs.grad), (x.shape, dtype)


def test_other_dimension_and_threshold_match():
    x = torch.randn(9, 30, 4, generator=torch.Generator().manual_seed(3))
    for dim in (0, 1, -1):
        z = (x - x.max(dim=dim, keepdim=True).values) / 2
        t1, s1 = threshold_and_support(z, dim)
        t2, s2 = sparsemax.Entmax15Function._threshold_and_support(z, dim)
        assert torch.equal(t1, t2) and torch.equal(s1, s2), dim
        assert torch.equal(Entmax15(dim)(x), sparsemax.Entmax15(dim)(x)), dim


def test_rows_sum_to_one_and_are_sparse():
    y = Entmax15()(torch.randn(500, 49, generator=torch.Generator().manual_seed(5)) * 3)
    torch.testing.assert_close(y.sum(-1), torch.ones(500))
    assert bool((y == 0).any(-1).all())  # exact zeros: a sparse mask


def test_use_fast_entmax_swaps_tabnet_selectors_without_touching_the_state():
    from pytorch_tabnet.tab_network import TabNet

    torch.manual_seed(0)
    net = TabNet(10, 1, n_d=4, n_a=4, n_steps=3, group_attention_matrix=torch.eye(10), mask_type="entmax")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(128, 10)
    net.eval()
    with torch.no_grad():
        expected = net(x)[0]
    assert use_fast_entmax(net) == 3
    assert not any(type(m) is sparsemax.Entmax15 for m in net.modules())
    assert sum(type(m) is Entmax15 for m in net.modules()) == 3
    assert before.keys() == net.state_dict().keys()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert torch.equal(net(x)[0], expected)
