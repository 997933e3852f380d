import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    env = os.environ.get("DISTREC_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real datasets not found: set DISTREC_SHARED_DATA or place them at ../shared/data")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, sized for a 2-core machine."""
    import ray

    from distrec.distributed.runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """A small prepared synthetic dataset shared by the tests that only read it."""
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.synthetic import make_synthetic

    raw = make_synthetic(n_users=300, n_items=200, avg_degree=15, image_size=8, seed=1)
    tables, meta = prepare(raw, PrepareConfig(seed=1), "synthetic")
    return write_prepared(tables, meta, tmp_path_factory.mktemp("synthetic") / "ds")
