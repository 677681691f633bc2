import os

# Token authentication on for every cluster the tests start or join, as Ray 2.60 runs by default.
# A process reads the mode when it imports ray, so it is set here, before any test module does.
os.environ.setdefault("RAY_AUTH_MODE", "token")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames_path() -> str:
    return os.environ.get("ORCHESTRA_RAY_FRAMES") or os.path.join(REPO, "..", "shared", "data", "frames_replay")


@pytest.fixture(scope="session")
def frames_dir() -> str:
    path = frames_path()
    if not os.path.isfile(os.path.join(path, "questions.parquet")):
        pytest.fail(f"FRAMES replay data not found at {path}; set ORCHESTRA_RAY_FRAMES")
    return path
