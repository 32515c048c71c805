import os


# With two OpenMP threads, CPU torch on small VMs randomly slows down 10-100x (libgomp spin-waits). Set it before torch
# is imported by any test module.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


torch.set_num_threads(1)

import pytest  # noqa: E402

from vzero_trl.toy.tiny import build_tiny_pair  # noqa: E402


# `fake_hub`: a loopback Hub-compatible server for publishing tests; `script`, `launch_data`, `launch`: the launcher.
pytest_plugins = ["fixtures.hub_server", "fixtures.launcher"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny random student and teacher, built once per test session (the tests load them from disk, read-only)."""
    return build_tiny_pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def letter_pair(tmp_path_factory):
    """The trained letter-world pair shipped with the package (a teacher that reads the crop, a student that half-sees),
    copied once per session: `(teacher folder, student folder)`."""
    from vzero_trl.mini.pretrain import WORLD_PAIRS, ensure_pair

    teacher, student, _ = ensure_pair(tmp_path_factory.mktemp("letter") / "pair", WORLD_PAIRS["letter"], log=None)
    return str(teacher), str(student)
