"""The tiny base model's pre-training windows (no Ray): each starts where a document starts, so a
document shorter than a window is seen whole, and nothing is cut or lost at the stream's end."""

import random

from orchestra_ray.policy.tiny_model import document_windows

SEP = 0


def _docs(seed, n=200):
    rng = random.Random(seed)
    return [[rng.randint(1, 99) for _ in range(rng.randint(1, 40))] for _ in range(n)]


def test_every_window_starts_at_a_document_and_holds_a_short_one_whole():
    docs = _docs(0)
    stream, starts = document_windows(docs, 64, SEP)
    offsets, at = [], 0
    for d in docs:
        offsets.append(at)
        at += len(d) + 1
    assert stream.tolist() == [t for d in docs for t in (*d, SEP)]
    assert starts == [o for o in offsets if o + 64 <= len(stream)]
    for i, s in enumerate(starts):
        window = stream[s: s + 64].tolist()
        assert len(window) == 64
        assert window[: len(docs[i]) + 1] == [*docs[i], SEP]


def test_a_stream_shorter_than_a_window_is_padded_into_one():
    stream, starts = document_windows([[5, 6], [7]], 8, SEP)
    assert starts == [0]
    assert stream.tolist() == [5, 6, SEP, 7, SEP, SEP, SEP, SEP]


def test_a_long_document_starts_a_window_and_the_tail_too_short_for_one_does_not():
    stream, starts = document_windows([list(range(1, 30)), [40, 41], list(range(50, 70))], 10, SEP)
    assert len(stream) == 30 + 3 + 21
    assert starts == [0, 30, 33]  # 33 + 10 <= 54: the last document still leaves a full window
    stream, starts = document_windows([list(range(1, 30)), [40, 41]], 10, SEP)
    assert starts == [0]  # [40, 41] starts at 30, where only 3 tokens are left


def test_an_unknown_window_choice_is_refused_by_name():
    import pytest
    from orchestra_ray.config_load import load_config
    from orchestra_ray.errors import ConfigError
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs", "quickstart.yaml")
    with pytest.raises(ConfigError, match="policy.tiny.pretrain_windows"):
        load_config(path, ["policy.tiny.pretrain_windows=aligned"])
    assert load_config(path, []).policy.tiny.pretrain_windows == "packed"
