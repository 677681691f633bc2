import os

# Token authentication on for every cluster the tests start or join, as Ray 2.60 runs by default.
# A process reads the mode when it imports ray, so it is set here, before any test module does.
os.environ.setdefault("RAY_AUTH_MODE", "token")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames_path() -> str:
    from orchestra_ray.config import FRAMES_DATA

    return os.environ.get("ORCHESTRA_RAY_FRAMES") or FRAMES_DATA


@pytest.fixture(scope="session")
def frames_dir() -> str:
    path = frames_path()
    if not os.path.isfile(os.path.join(path, "questions.parquet")):
        pytest.fail(f"FRAMES replay data not found at {path}; set ORCHESTRA_RAY_FRAMES")
    return path


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster of 2 CPUs for the module's tests."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def uneven_policy(tmp_path_factory) -> str:
    """A tiny Qwen3 policy (with its tokenizer) of 2 layers whose sizes do not split evenly over 2
    ranks: the learner tests' model."""
    from orchestra_ray.config import TinyModelConfig
    from orchestra_ray.policy.tiny_model import build_tiny_policy

    corpus = ["The Seine flows through Paris.", "user: assistant: Which river? The Seine.", "call ask answer"] * 20
    cfg = TinyModelConfig(vocab_size=301, hidden_size=24, intermediate_size=50, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=12, max_position_embeddings=128, pretrain_steps=0)
    return build_tiny_policy(cfg, corpus, str(tmp_path_factory.mktemp("tiny") / "model"))


# After every test has run and every cluster a test started is shut down, the test process ends
# with pytest's own exit status without the interpreter's teardown: with Ray, Serve, RLlib, TRL and
# faiss loaded into one long-lived process, that teardown has crashed (a segfault after "N passed")
# and turned a green run red. A single training or serving process loads far fewer of them.
_EXIT_STATUS = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "code" in _EXIT_STATUS and not hasattr(config, "workerinput"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["code"])
