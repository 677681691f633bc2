import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames_path() -> str:
    return os.environ.get("ORCHESTRA_RAY_FRAMES") or os.path.join(REPO, "..", "shared", "data", "frames_replay")


@pytest.fixture(scope="session")
def frames_dir() -> str:
    path = frames_path()
    if not os.path.isfile(os.path.join(path, "questions.parquet")):
        pytest.fail(f"FRAMES replay data not found at {path}; set ORCHESTRA_RAY_FRAMES")
    return path
