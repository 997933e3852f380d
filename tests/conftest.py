import os
from pathlib import Path

import numpy as np
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


def make_digits(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of noisy 28x28 images: class c lights a 3-row bar at row 2c + 2 (neighbours overlap),
    hard enough that an untrained c2f2 retrieves only ~85% right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 230, (n, size, size))
    for i, c in enumerate(labels):
        images[i, 2 * c + 2 : 2 * c + 5, 4:24] = 255
    return images.astype(np.uint8), labels


@pytest.fixture(scope="session")
def digit_dataset(tmp_path_factory):
    import pyarrow as pa

    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.readers.images import encode_png
    from distrec.data.source import RawDataset

    raw = RawDataset("digits")
    for split, n, seed in (("train", 600, 0), ("test", 300, 1)):
        images, labels = make_digits(n, seed)
        raw.labeled_images[split] = pa.table(
            {
                "image_id": np.arange(n, dtype=np.int64),
                "image": pa.array([encode_png(a) for a in images], pa.binary()),
                "label": labels.astype(np.int64),
            }
        )
    tables, meta = prepare(raw, PrepareConfig(split="none"), "idx")
    return write_prepared(tables, meta, tmp_path_factory.mktemp("digits") / "ds")


def run_on_three_nodes(study_file, out: str) -> dict:
    """Run a study on a simulated 3-node ``ray.cluster_utils.Cluster`` (1 CPU each) in a subprocess, apart
    from the tests' shared Ray; returns the units run and the live nodes."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import json, ray
        from ray.cluster_utils import Cluster
        from distrec.study import run_study
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            result = run_study({str(study_file)!r}, {out!r}, progress=False)
            print(json.dumps({{"cells_run": result["cells_run"], "stages": result["stages"], "nodes": len([n for n in ray.nodes() if n["Alive"]])}}))
        finally:
            ray.shutdown()
            cluster.shutdown()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
