import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import toy  # noqa: E402

from geo import DEMO_DIR  # noqa: E402
from geo.loader import load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def toy_paths(tmp_path_factory):
    return toy.write(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def toy_ds(toy_paths):
    return load_dataset(*toy_paths)


@pytest.fixture(scope="session")
def demo_ds():
    return load_dataset(DEMO_DIR / "regions.geojson", DEMO_DIR / "zones.geojson",
                        DEMO_DIR / "teams.yaml")
