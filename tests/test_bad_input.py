"""Bad input from the user's side: config values a type cannot bound, broken FRAMES replay files
(real Parquet written here), and more rollout workers than a real local Ray cluster can ever place.
Each failure is one line naming the key, or the file and the column. (Unknown keys and the wrong
types of the common keys are covered in test_config.py.)"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.frames import QUESTIONS_FILE, RESPONSES_FILE, load_questions, load_responses, split_questions
from orchestra_ray.errors import DataError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO_ROOT, "pipelines", "configs", "quickstart.yaml")


def config_error(frames_dir: str, *overrides: str, path: str = QUICKSTART) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, [f"data.path={frames_dir}", *overrides])
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("item, key", [
    ("rollout.group_size=0", "rollout.group_size"),
    ("rollout.group_size=-4", "rollout.group_size"),
    ("trainer.lr=-0.001", "trainer.lr"),
    ("trainer.lr=inf", "trainer.lr"),
    ("trainer.lr=nan", "trainer.lr"),
    ("warm_start.lr=-1", "warm_start.lr"),
    ("policy.tiny.pretrain_lr=-3e-3", "policy.tiny.pretrain_lr"),
    ("policy.tiny.pretrain_lr=0", "policy.tiny.pretrain_lr"),
    ("trainer.max_grad_norm=0", "trainer.max_grad_norm"),
    ("rollout.max_batch_size=0", "rollout.max_batch_size"),
    ("rollout.max_total_tokens=-1", "rollout.max_total_tokens"),
    ("rollout.num_cpus_per_worker=-0.5", "rollout.num_cpus_per_worker"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.max_tokens_per_micro_batch=-1", "trainer.max_tokens_per_micro_batch"),
    ("trainer.num_gpus=-1", "trainer.num_gpus"),
    ("warm_start.batch_size=0", "warm_start.batch_size"),
    ("warm_start.examples=-8", "warm_start.examples"),
    ("warm_start.multi_call_share=1.0", "warm_start.multi_call_share"),
    ("policy.tiny.num_hidden_layers=0", "policy.tiny.num_hidden_layers"),
    ("policy.tiny.vocab_size=-1", "policy.tiny.vocab_size"),
    ("data.max_train_questions=-5", "data.max_train_questions"),
    ("cluster.num_cpus=0", "cluster.num_cpus"),
    ("reward.eps=-1e-6", "reward.eps"),
    ("eval.bootstrap_samples=0", "eval.bootstrap_samples"),
    ("zoo.max_response_chars=0", "zoo.max_response_chars"),
    ("tools.sandbox.max_code_chars=0", "tools.sandbox.max_code_chars"),
])
def test_out_of_range_values_name_the_key(frames_dir, item, key):
    msg = config_error(frames_dir, item)
    assert f"'{key}'" in msg or f"{key} " in msg, msg


@pytest.mark.parametrize("item, key", [
    ("rollout.group_size=eight", "rollout.group_size"),
    ("trainer.lr=[0.1]", "trainer.lr"),
    ("families.weights.frames=high", "families.weights.frames"),
    ("tools.sandbox.timeout_s=soon", "tools.sandbox.timeout_s"),
    ("rollout.resources.rollout=lots", "rollout.resources.rollout"),
    ("rollout.autoscale.enabled=maybe", "rollout.autoscale.enabled"),
])
def test_wrong_types_in_nested_sections_name_the_key(frames_dir, item, key):
    msg = config_error(frames_dir, item)
    assert key in msg and "wrong type" in msg, msg


@pytest.mark.parametrize("item, key", [
    ("tools.sandbox.modee=none", "tools.sandbox.modee"),
    ("families.domain.namez=[bank]", "families.domain.namez"),
    ("rollout.autoscale.max=3", "rollout.autoscale.max"),
])
def test_unknown_nested_keys_name_the_key(frames_dir, item, key):
    msg = config_error(frames_dir, item)
    assert key in msg and "unknown" in msg, msg


def test_wrong_type_in_a_yaml_expert_entry_names_entry_key_and_file(frames_dir, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("zoo:\n  strongest: a\n  experts:\n    - name: a\n      arm: x\n      output_tokens_per_s: fast\n")
    msg = config_error(frames_dir, path=str(p))
    assert "output_tokens_per_s" in msg and str(p) in msg, msg


# ------------------------------------------------------------------------------------------ data


def _questions(**columns) -> pa.Table:
    base = {"question_id": pa.array(["q1", "q2", "q3"], pa.string()),
            "problem": pa.array(["What?", "Who?", "When?"], pa.string()),
            "answer": pa.array(["this", "them", "then"], pa.string())}
    base.update(columns)
    return pa.table({k: v for k, v in base.items() if v is not None})


def _responses(**columns) -> pa.Table:
    base = {"question_id": pa.array(["q1", "q2"], pa.string()), "arm": pa.array(["a", "a"], pa.string()),
            "response": pa.array(["x", "y"], pa.string()), "grading": pa.array(["A", "B"], pa.string()),
            "billed_output_tokens": pa.array([12, 30], pa.int64())}
    base.update(columns)
    return pa.table({k: v for k, v in base.items() if v is not None})


def _write(root, name: str, table: pa.Table) -> str:
    path = os.path.join(str(root), name)
    pq.write_table(table, path)
    return path


def data_error(load, root) -> str:
    with pytest.raises(DataError) as info:
        load(str(root))
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("column", ["question_id", "problem"])
def test_questions_file_missing_a_column(tmp_path, column):
    path = _write(tmp_path, QUESTIONS_FILE, _questions(**{column: None}))
    msg = data_error(load_questions, tmp_path)
    assert path in msg and f"missing column '{column}'" in msg


@pytest.mark.parametrize("column", ["question_id", "arm", "response", "grading", "billed_output_tokens"])
def test_responses_file_missing_a_column(tmp_path, column):
    path = _write(tmp_path, RESPONSES_FILE, _responses(**{column: None}))
    msg = data_error(load_responses, tmp_path)
    assert path in msg and f"missing column '{column}'" in msg


@pytest.mark.parametrize("file, table, column, got", [
    (QUESTIONS_FILE, _questions(question_id=pa.array([1, 2, 3], pa.int64())), "question_id", "int64"),
    (QUESTIONS_FILE, _questions(problem=pa.array([b"a", b"b", b"c"], pa.binary())), "problem", "binary"),
    (RESPONSES_FILE, _responses(grading=pa.array([1, 2], pa.int8())), "grading", "int8"),
    (RESPONSES_FILE, _responses(billed_output_tokens=pa.array([1.5, 2.0], pa.float64())), "billed_output_tokens", "double"),
    (RESPONSES_FILE, _responses(arm=pa.array([["a"], ["a"]], pa.list_(pa.string()))), "arm", "list"),
])
def test_wrong_column_type_names_file_column_and_types(tmp_path, file, table, column, got):
    path = _write(tmp_path, file, table)
    msg = data_error(load_questions if file == QUESTIONS_FILE else load_responses, tmp_path)
    assert path in msg and f"column '{column}'" in msg and got in msg, msg


def test_responses_file_without_rows(tmp_path):
    path = _write(tmp_path, RESPONSES_FILE, _responses().slice(0, 0))
    assert path in data_error(load_responses, tmp_path)


@pytest.mark.parametrize("ids, fragment", [
    (["q1", None, "q3"], "column 'question_id' is empty at row 1"),
    (["q1", "  ", "q3"], "column 'question_id' is empty at row 1"),
    (["q1", "q2", "q1"], "column 'question_id' repeats 'q1' at row 2"),
])
def test_empty_or_repeated_question_ids(tmp_path, ids, fragment):
    path = _write(tmp_path, QUESTIONS_FILE, _questions(question_id=pa.array(ids, pa.string())))
    msg = data_error(load_questions, tmp_path)
    assert path in msg and fragment in msg, msg


@pytest.mark.parametrize("columns, fragment", [
    ({"arm": pa.array(["a", None], pa.string())}, "column 'arm' is empty at row 1"),
    ({"question_id": pa.array([None, "q2"], pa.string())}, "column 'question_id' is empty at row 0"),
    ({"grading": pa.array(["A", "D"], pa.string())}, "column 'grading' has 'D' at row 1"),
])
def test_bad_values_in_responses(tmp_path, columns, fragment):
    path = _write(tmp_path, RESPONSES_FILE, _responses(**columns))
    msg = data_error(load_responses, tmp_path)
    assert path in msg and fragment in msg, msg


@pytest.mark.parametrize("column, values, fragment", [
    ("problem", ["What?", None, "When?"], "column 'problem' is empty at row 1"),
    ("answer", ["this", "them", None], "column 'answer' is empty at row 2"),
    ("answer", ["this", "   ", "then"], "column 'answer' is empty at row 1"),
])
def test_questions_without_text_or_gold_answer(tmp_path, column, values, fragment):
    path = _write(tmp_path, QUESTIONS_FILE, _questions(**{column: pa.array(values, pa.string())}))
    msg = data_error(load_questions, tmp_path)
    assert path in msg and fragment in msg, msg


def test_two_different_responses_of_one_arm_to_one_question(tmp_path):
    twice = dict(question_id=pa.array(["q1", "q1"], pa.string()), response=pa.array(["x", "z"], pa.string()))
    path = _write(tmp_path, RESPONSES_FILE, _responses(**twice))
    msg = data_error(load_responses, tmp_path)
    assert path in msg and "arm 'a' has two different responses to question 'q1' (rows 0 and 1)" in msg
    # the same row twice is harmless
    _write(tmp_path, RESPONSES_FILE, _responses(question_id=pa.array(["q1", "q1"], pa.string()),
                                                response=pa.array(["x", "x"], pa.string()),
                                                grading=pa.array(["A", "A"], pa.string())))
    assert list(load_responses(str(tmp_path))["a"]) == ["q1"]


def _damage_bytes(path):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid: mid + 40] = b"\x00" * 40
    open(path, "wb").write(bytes(data))


def _cut(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 20])


def _invalid_utf8(path):
    # a string column whose bytes are not UTF-8: written as binary, then relabelled as a string
    table = _questions(problem=pa.array([b"ok", b"\xff\xfe bad", b"fine"], pa.binary()))
    table = table.cast(pa.schema([pa.field(f.name, pa.string()) for f in table.schema]), safe=False)
    pq.write_table(table, path)


@pytest.mark.parametrize("damage, fragment", [
    (_damage_bytes, "cannot read Parquet file"), (_cut, "cannot read Parquet file"), (_invalid_utf8, "column 'problem'"),
])
def test_damaged_parquet_files_are_one_line(tmp_path, damage, fragment):
    path = _write(tmp_path, QUESTIONS_FILE, _questions(problem=pa.array(["What?" * 300, "Who?", "When?"], pa.string())))
    damage(path)
    msg = data_error(load_questions, tmp_path)
    assert path in msg and fragment in msg, msg


def test_a_negative_token_count_bills_nothing(tmp_path):
    # The real data holds three (o4-mini_high_effort); a negative cost would reward calling that arm.
    _write(tmp_path, RESPONSES_FILE, _responses(billed_output_tokens=pa.array([-45, 30], pa.int64())))
    assert [r.output_tokens for r in load_responses(str(tmp_path))["a"].values()] == [0, 30]


@pytest.mark.parametrize("fraction, side", [(1e-9, "held-out"), (1 - 1e-9, "train")])
def test_an_empty_split_names_the_file_and_the_column(tmp_path, fraction, side):
    path = _write(tmp_path, QUESTIONS_FILE, _questions())
    with pytest.raises(DataError) as info:
        split_questions(load_questions(str(tmp_path)), fraction)
    msg = str(info.value)
    assert msg.startswith(f"{path}: column 'question_id': ") and f"leaves the {side} split empty" in msg, msg
    assert "data.heldout_fraction" in msg and "3 questions" in msg


def test_cli_reports_a_broken_data_file_in_one_line_before_any_cluster(tmp_path, capsys):
    from pipelines.cli import main

    path = _write(tmp_path, QUESTIONS_FILE, _questions(answer=pa.array([1, 2, 3], pa.int32())))
    assert main(["train", f"data.path={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("orchestra-ray: error: ") and path in err and "'answer'" in err


def test_cli_reports_an_empty_split_in_one_line(tmp_path, capsys):
    from pipelines.cli import main

    path = _write(tmp_path, QUESTIONS_FILE, _questions())
    _write(tmp_path, RESPONSES_FILE, _responses(question_id=pa.array(["q1", "q2"], pa.string())))
    # Responses cover q1 and q2 only: whatever the fraction, the zoo keeps two questions.
    code = main(["train", f"data.path={tmp_path}", "zoo.experts=[{name: a, arm: a, input_price: 1.0, output_price: 1.0}]",
                 "zoo.strongest=a", "preferences.train_profiles=[balanced]", "preferences.eval_profiles=[balanced]",
                 "data.heldout_fraction=0.000001"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert path in err and "column 'question_id'" in err and "held-out split empty" in err, err


# ------------------------------------------------------------------------------------- placement


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray.cluster_resources()
    ray.shutdown()


def test_more_rollout_workers_than_the_cluster_can_place(cluster, frames_dir):
    from pipelines.cluster import check_placement

    assert cluster["CPU"] == 2
    cfg = load_config(QUICKSTART, [f"data.path={frames_dir}", "rollout.num_workers=8", "rollout.num_cpus_per_worker=0.5"])
    with pytest.raises(ConfigError) as info:
        check_placement(cfg)
    msg = str(info.value)
    assert "'rollout.num_workers'" in msg and "8 workers" in msg and "the cluster has 2" in msg and "\n" not in msg
    # One worker fits (0.5 + learner and reference 2 x 0.5 = 1.5 CPUs of 2).
    check_placement(load_config(QUICKSTART, [f"data.path={frames_dir}", "rollout.num_workers=1"]))


def test_gpu_workers_on_a_cpu_cluster(cluster, frames_dir):
    from pipelines.cluster import check_placement

    cfg = load_config(QUICKSTART, [f"data.path={frames_dir}", "rollout.num_workers=1", "rollout.num_gpus_per_worker=1"])
    with pytest.raises(ConfigError, match="'rollout.num_gpus_per_worker'"):
        check_placement(cfg)
