"""Run configuration: loading, one-line errors that name the key or file, and the CLI's exit code."""

from __future__ import annotations

import os
import sys

import pytest

from orchestra_ray.config import FRAMES_DATA, OrchestraConfig
from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO_ROOT, "pipelines", "configs", "quickstart.yaml")
FRAMES = os.environ.get("ORCHESTRA_RAY_FRAMES") or FRAMES_DATA
DATA = f"data.path={FRAMES}"


def load(*overrides: str, path: str = QUICKSTART) -> OrchestraConfig:
    return load_config(path, [DATA, *overrides])


def config_error(*overrides: str, path: str = QUICKSTART) -> str:
    with pytest.raises(ConfigError) as info:
        load(*overrides, path=path)
    msg = str(info.value)
    assert "\n" not in msg, msg  # one line
    return msg


def test_quickstart_loads():
    cfg = load()
    assert isinstance(cfg, OrchestraConfig)
    assert cfg.data.path == FRAMES
    assert cfg.rollout.group_size == 8
    assert cfg.zoo.strongest == "claude-sonnet-4"
    assert [e.name for e in cfg.zoo.experts] == ["claude-sonnet-4", "gpt-5-mini", "grok-3-mini", "qwen3-8b"]
    assert cfg.zoo.experts[3].arm == "Qwen3-8B_no_think"
    assert cfg.preferences.eval_profiles == ["balanced", "accuracy-first", "cost-first", "latency-first"]
    # schema defaults fill what the YAML leaves out
    assert cfg.reward.std_normalize is True
    assert cfg.trainer.max_grad_norm == 1.0


def test_overrides_apply_and_are_typed():
    cfg = load("trainer.lr=0.01", "rollout.group_size=4", "reward.std_normalize=false",
               "preferences.train_profiles=[cost-first,avoid:qwen3-8b]", "trainer.steps=3")
    assert cfg.trainer.lr == 0.01 and isinstance(cfg.trainer.lr, float)
    assert cfg.rollout.group_size == 4 and isinstance(cfg.rollout.group_size, int)
    assert cfg.reward.std_normalize is False
    assert cfg.preferences.train_profiles == ["cost-first", "avoid:qwen3-8b"]
    assert cfg.trainer.steps == 3


def test_family_examples_override_a_familys_share():
    assert load("warm_start.family_examples.domain=384").warm_start.family_examples == {"domain": 384}
    assert load().warm_start.family_examples == {}


def test_an_unknown_token_limit_field_is_named():
    msg = config_error("zoo.experts.1.backend=openai", "zoo.experts.1.model=gpt-5-mini",
                       "zoo.experts.1.base_url=https://api.openai.com/v1", "zoo.experts.1.token_limit_param=max_new_tokens")
    assert "zoo.experts.1.token_limit_param" in msg and "max_completion_tokens" in msg, msg


def test_later_override_wins():
    assert load("trainer.lr=0.1", "trainer.lr=0.2").trainer.lr == 0.2


def test_unknown_key_in_override_names_the_key():
    msg = config_error("trainer.lrr=1")
    assert "trainer.lrr" in msg and "unknown" in msg


def test_unknown_top_level_key_in_override():
    assert "trainerz" in config_error("trainerz.lr=1")


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("trainer:\n  lr: 1.0e-3\n  lrr: 1\n")
    msg = config_error(path=str(p))
    assert "trainer.lrr" in msg and str(p) in msg


def test_unknown_key_in_yaml_expert_entry(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("zoo:\n  strongest: a\n  experts:\n    - name: a\n      arm: x\n      colour: red\n")
    msg = config_error(path=str(p))
    assert "colour" in msg and str(p) in msg


def test_wrong_type_in_override_names_the_key():
    msg = config_error("trainer.lr=abc")
    assert "trainer.lr" in msg and "abc" in msg


@pytest.mark.parametrize("item, key", [("trainer.steps=2.5", "trainer.steps"), ("rollout.group_size=true", "rollout.group_size")])
def test_wrong_type_other_keys(item, key):
    assert key in config_error(item)


def test_wrong_type_in_yaml_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("trainer:\n  lr: fast\n")
    msg = config_error(path=str(p))
    assert "trainer.lr" in msg and str(p) in msg


def test_yaml_syntax_error_names_the_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("trainer: [1, 2\n")
    assert str(p) in config_error(path=str(p))


def test_missing_file_names_the_path(tmp_path):
    missing = str(tmp_path / "nope" / "absent.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(missing, [DATA])
    assert missing in str(info.value)
    assert "\n" not in str(info.value)


def test_override_without_equals_sign():
    assert "trainer.lr" in config_error("trainer.lr")


def test_missing_required_value_names_the_key(tmp_path):
    p = tmp_path / "noarm.yaml"
    p.write_text("zoo:\n  strongest: a\n  experts:\n    - name: a\n")
    assert "arm" in config_error(path=str(p))


@pytest.mark.parametrize(
    "item, key",
    [
        ("rollout.group_size=1", "rollout.group_size"),
        ("trainer.lr=-1", "trainer.lr"),
        ("trainer.lr=0", "trainer.lr"),
        ("preferences.train_profiles=[nonsense]", "preferences.train_profiles"),
        ("preferences.eval_profiles=[prefer:nobody]", "preferences.eval_profiles"),
        ("preferences.train_profiles=[]", "preferences.train_profiles"),
        ("data.heldout_fraction=1.5", "data.heldout_fraction"),
        ("trainer.clip_low=1.0", "trainer.clip_low"),
        ("trainer.kl_coef=-0.1", "trainer.kl_coef"),
        ("rollout.temperature=-1", "rollout.temperature"),
        ("rollout.max_staleness=-1", "rollout.max_staleness"),
        ("policy.engine=tgi", "policy.engine"),
        ("trainer.mini_batches=3", "trainer.mini_batches"),  # 16 * 8 = 128 is not divisible by 3
        ("zoo.strongest=nobody", "zoo.strongest"),
        ("warm_start.family_examples.domian=10", "warm_start.family_examples.domian"),
        ("warm_start.family_examples.domain=-1", "warm_start.family_examples.domain"),
        ("warm_start.demonstrator=oracle", "warm_start.demonstrator"),
        ("warm_start.demonstrator_temperature=-0.1", "warm_start.demonstrator_temperature"),
        ("trainer.num_learners=0", "trainer.num_learners"),
        ("trainer.placement_strategy=RANDOM", "trainer.placement_strategy"),
        ("trainer.mixed_precision=float16", "trainer.mixed_precision"),
        ("trainer.mixed_precision=bfloat16", "trainer.mixed_precision"),  # one learner: group-only option
        ("trainer.cpu_offload=true", "trainer.cpu_offload"),
        ("trainer.collective_timeout_s=0", "trainer.collective_timeout_s"),
        ("trainer.lora.rank=-1", "trainer.lora.rank"),
        ("trainer.lora.dropout=1.0 trainer.lora.rank=8", "trainer.lora.dropout"),
        ("trainer.lora.publish=adapter", "trainer.lora.publish"),
        ("trainer.lora.publish=factors trainer.lora.rank=8", "trainer.lora.publish"),
    ],
)
def test_invalid_values_name_the_key(item, key):
    msg = config_error(*item.split())
    assert key in msg, msg


def test_invalid_profile_message_names_the_profile():
    assert "nonsense" in config_error("preferences.train_profiles=[balanced,nonsense]")


def test_repeated_slot_names(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("zoo:\n  strongest: a\n  experts:\n    - {name: a, arm: x}\n    - {name: a, arm: y}\n")
    assert "zoo.experts" in config_error(path=str(p))


def test_no_config_file_uses_schema_defaults_and_fails_on_missing_zoo():
    # The schema alone has no experts: the validation names the key.
    with pytest.raises(ConfigError, match="zoo"):
        load_config(None, [DATA])


# ---------------------------------------------------------------------------------------------
# the command line


def _cli(argv, capsys):
    from pipelines.cli import main

    had_ray = "ray" in sys.modules
    code = main(argv)
    out, err = capsys.readouterr()
    if not had_ray:  # the error comes before anything touches the cluster code
        assert "ray" not in sys.modules
    return code, out, err


def _assert_one_line_error(err: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("orchestra-ray: error: "), err
    assert "Traceback" not in err


def test_cli_unknown_key_exit_code_2(capsys):
    code, out, err = _cli(["train", DATA, "trainer.lrr=1"], capsys)
    assert code == 2
    _assert_one_line_error(err)
    assert "trainer.lrr" in err


def test_cli_unknown_key_without_data_override(capsys):
    code, _, err = _cli(["train", "trainer.lrr=1"], capsys)
    assert code == 2
    _assert_one_line_error(err)
    assert "trainer.lrr" in err


def test_cli_missing_data_path_names_the_file(capsys):
    code, _, err = _cli(["train", "data.path=/nonexistent"], capsys)
    assert code == 2
    _assert_one_line_error(err)
    assert "/nonexistent" in err
    assert "questions.parquet" in err


def test_cli_missing_config_file(capsys, tmp_path):
    missing = str(tmp_path / "absent.yaml")
    code, _, err = _cli(["train", missing, DATA], capsys)
    assert code == 2
    _assert_one_line_error(err)
    assert missing in err


def test_cli_invalid_value(capsys):
    code, _, err = _cli(["train", DATA, "rollout.group_size=1"], capsys)
    assert code == 2
    _assert_one_line_error(err)
    assert "rollout.group_size" in err


# ---------------------------------------------------------------------------------------------
# overrides into list elements and whole sections


def test_list_element_override_works_or_raises_config_error():
    try:
        cfg = load("zoo.experts.0.arm=gpt-5-mini_high_effort")
    except ConfigError as exc:
        assert "zoo.experts" in str(exc)
    else:
        assert cfg.zoo.experts[0].arm == "gpt-5-mini_high_effort"


def test_cli_list_element_override_is_a_clean_error(capsys):
    code, _, err = _cli(["train", "data.path=/nonexistent", "zoo.experts.0.colour=red"], capsys)
    assert code == 2
    _assert_one_line_error(err)


def test_scalar_for_a_section_names_the_section():
    msg = config_error("trainer=3")
    assert "config key ''" not in msg


def test_the_bundled_frames_data_is_the_default_and_lies_in_the_checkout():
    cfg = load_config(QUICKSTART, [])
    if not os.environ.get("ORCHESTRA_RAY_FRAMES"):
        assert cfg.data.path == FRAMES_DATA
    assert os.path.isabs(FRAMES_DATA) and FRAMES_DATA.startswith(REPO_ROOT + os.sep)
    assert {"questions.parquet", "responses.parquet", "README.md"} <= set(os.listdir(FRAMES_DATA))


def test_paths_a_run_records_are_made_absolute(tmp_path, monkeypatch):
    from orchestra_ray.config_load import make_paths_absolute

    monkeypatch.chdir(tmp_path)
    cfg = make_paths_absolute(load_config(QUICKSTART, ["data.path=frames", "run.root=out", "tools.search.cache_dir=c/s",
                                                       "policy.cache_dir=c/p"]))
    assert cfg.data.path == str(tmp_path / "frames") and cfg.run.root == str(tmp_path / "out")
    assert cfg.policy.cache_dir == str(tmp_path / "c" / "p") and cfg.tools.search.cache_dir == str(tmp_path / "c" / "s")
    assert cfg.tools.sandbox.bwrap == "bwrap" and cfg.tools.sandbox.python == ""  # a name on PATH, "this Python": kept


@pytest.mark.parametrize("override", [
    "rollout.retry_backoff_s=inf", "rollout.temperature=1e400", "trainer.kl_coef=inf", "trainer.weight_decay=nan",
    "reward.eps=1e999", "zoo.experts.0.input_price=inf", "zoo.experts.1.output_price=-inf", "eval.temperature=nan",
    "rollout.autoscale.idle_timeout_s=inf", "tools.sandbox.timeout_s=inf", "trainer.max_grad_norm=inf",
    "families.weights.frames=inf",
])
def test_non_finite_numbers_are_refused_with_their_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{key}'.*finite"):
        load(override)


def test_an_infinite_upper_clip_is_the_one_infinity_that_means_something():
    assert load("trainer.clip_high=inf").trainer.clip_high == float("inf")
    with pytest.raises(ConfigError, match="trainer.clip_low"):
        load("trainer.clip_low=inf")


def test_a_run_root_that_is_a_file_or_under_one_is_refused(tmp_path, capsys):
    from pipelines.cli import main

    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    assert main(["train", "quickstart", f"run.root={afile}"]) == 2
    assert "'run.root': " in capsys.readouterr().err
    assert main(["train", "quickstart", f"run.root={afile}/runs"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt is a file, not a directory (on the way to" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("override, says", [
    ("preferences.weights.cost-first.price=1.0", "unknown metric 'price'"),
    ("preferences.weights.cost-first.cost=-0.5", "must not be negative"),
    ("preferences.weights.cost-first.cost=inf", "finite"),
    ("preferences.weights.thrifty.cost=0", "every weight is 0"),
])
def test_bad_profile_weights_are_one_line_naming_the_profile(override, says):
    with pytest.raises(ConfigError) as exc:
        load(override)
    msg = str(exc.value)
    assert "preferences.weights." in msg and says in msg and "\n" not in msg


def test_profile_weights_from_the_config_reach_training_evaluation_and_serving():
    from orchestra_ray.families.frames import Question
    from orchestra_ray.families.task import MixedTaskSampler, eval_tasks
    from orchestra_ray.serving.api import parse_preference

    cfg = load("preferences.weights.cost-first.outcome=0.3", "preferences.weights.cost-first.cost=0.6",
               "preferences.weights.cost-first.latency=0.1", "preferences.weights.thrifty.cost=1.0",
               "preferences.train_profiles=[cost-first,thrifty]", "preferences.eval_profiles=[thrifty]")
    own, slots = cfg.preferences.weights, [e.name for e in cfg.zoo.experts]
    qs = [Question(str(i), f"q{i}", "a") for i in range(8)]
    tasks = MixedTaskSampler({"frames": qs}, {"frames": 1.0}, cfg.preferences.train_profiles, slots, 0, own).next_tasks(8, 1)
    seen = {t.preference.profile: t.preference.weights for t in tasks}
    assert (seen["cost-first"]["outcome"], seen["cost-first"]["cost"], seen["cost-first"]["latency"]) == (0.3, 0.6, 0.1)
    assert seen["thrifty"]["cost"] == 1.0 and seen["thrifty"]["outcome"] == 0.0
    assert {t.preference.weights["cost"] for t in eval_tasks(qs, cfg.preferences.eval_profiles, slots, own)} == {1.0}
    assert parse_preference("cost-first", slots, "balanced", own).weights["cost"] == 0.6
    assert parse_preference("cost-first", slots, "balanced").weights["cost"] == 0.7  # the built-in weights
