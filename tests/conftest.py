import os

import pytest
import torch

if "OMP_NUM_THREADS" not in os.environ:  # respect an explicit setting (a shared machine)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))  # CI has 2 cores


@pytest.fixture(scope="session")
def tiny_base():
    import sned
    torch.manual_seed(0)
    # random (not zero) residual outputs: equivalence tests then see every branch
    return sned.build_supernet("tiny-base", ["zero_init_residual=false"]).eval()


@pytest.fixture(scope="session")
def tiny_ssr():
    import sned
    torch.manual_seed(1)
    return sned.build_supernet("tiny-ssr", ["zero_init_residual=false"]).eval()
