"""`sparse_transfer.training.distributed` in one process: no-ops, and a digest that sees every bit.

The collectives themselves run under torchrun in tests/integration/test_distributed.py.
"""

import torch

from sparse_transfer.training import distributed


def test_single_process_is_rank_zero_of_one_and_collectives_are_no_ops():
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main_process()
    t = torch.tensor([1.0, -2.0])
    assert distributed.all_reduce_(t, "max") is t and t.tolist() == [1.0, -2.0]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([0.5, 0.25])
    distributed.average_gradients_([p])
    assert p.grad.tolist() == [0.5, 0.25]
    distributed.barrier()


def test_digest_changes_with_any_bit_dtype_or_shape():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    base = distributed.tensors_digest([a])
    assert distributed.assert_same_on_all_ranks([a], "x") == base
    flipped = a.clone()
    flipped[3] = torch.nextafter(flipped[3], torch.tensor(5.0))  # one ulp
    assert distributed.tensors_digest([flipped]) != base
    assert distributed.tensors_digest([a.double()]) != base
    assert distributed.tensors_digest([a.view(2, 2)]) != base
    assert distributed.tensors_digest([a.ne(0)]) == distributed.tensors_digest([a.ne(0)])
