"""One torch thread for the model tests, as the CLI and the training jobs use: these models are too small to
gain from two, and on a shared 2-core machine two threads wait on each other (a 2 s training test took
minutes under load). Restored afterwards so other test packages keep their own setting."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
