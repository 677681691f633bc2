"""KubeRay manifests in clusters/kuberay: schema, rendering and agreement with the training run.

Ray resources are checked against the KubeRay CRDs' v1 schemas (tests/data/kuberay_crds, copied
from KubeRay) the way an API server with strict field validation would: unknown fields are errors. Each overlay is rendered with `kubectl kustomize` when kubectl is installed, else
read as the files its kustomizations list. The cluster each RayJob runs on is then read by Ray's own
KubeRay autoscaler code, so the custom resources, CPUs and GPUs compared with the run's config are
the ones the autoscaler will see.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.config_load import load_config
from orchestra_ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
KUBERAY = REPO / "clusters" / "kuberay"
README = KUBERAY / "README.md"
CONFIGS = REPO / "pipelines" / "configs"
OVERLAYS = sorted(p.parent.name for p in (KUBERAY / "overlays").glob("*/kustomization.yaml"))
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}
AUTH_SECRET_KEY = "auth_token"  # the key KubeRay reads from authOptions.secretName
METRICS_PORT = 8080
# Survives the submitter's bash and `ray job submit`'s re-quoting unchanged.
SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_./:=@+-]+$")


# ---- loading ------------------------------------------------------------------------------------
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 60,000 lines


def yaml_docs(path: Path) -> List[dict]:
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=LOADER) if d is not None]


def manifest_files() -> List[Path]:
    return sorted(p for p in KUBERAY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _forbid_unknown_fields(schema):
    """The schema with `additionalProperties: false` on every object that lists its properties and
    does not preserve unknown fields: what `kubectl apply`'s strict field validation rejects."""
    if isinstance(schema, list):
        return [_forbid_unknown_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _forbid_unknown_fields(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: items of a set, and the keys of a map's items, are unique."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        seen = [json.dumps(i, sort_keys=True) for i in instance]
        if len(seen) != len(set(seen)):
            yield jsonschema.ValidationError(f"duplicate items in a set: {instance}")
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(i.get(k) for k in keys) for i in instance if isinstance(i, dict)]
        dup = {s for s in seen if seen.count(s) > 1}
        if dup:
            yield jsonschema.ValidationError(f"duplicate {'/'.join(keys)} in a map list: {sorted(map(str, dup))}")


StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"x-kubernetes-list-type": _list_type})


@pytest.fixture(scope="module")
def validators() -> Dict[str, jsonschema.protocols.Validator]:
    crds = REPO / "tests" / "data" / "kuberay_crds"
    assert crds.is_dir(), f"KubeRay CRDs not found at {crds}"
    out = {}
    for kind, name in CRD_FILES.items():
        crd = yaml_docs(crds / name)[0]
        assert crd["spec"]["names"]["kind"] == kind, f"{name} defines {crd['spec']['names']['kind']}, not {kind}"
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = StrictValidator(_forbid_unknown_fields(v1["schema"]["openAPIV3Schema"]))
    return out


def schema_errors(validators, doc: dict) -> List[str]:
    v = validators[doc["kind"]]
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
            for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def listed_docs(directory: Path) -> List[dict]:
    """The documents a kustomization lists under `resources`, following bases; no patches applied."""
    kust = yaml_docs(directory / "kustomization.yaml")[0]
    docs = []
    for item in kust.get("resources", []):
        path = (directory / item).resolve()
        docs += listed_docs(path) if path.is_dir() else yaml_docs(path)
    return docs


def render(overlay: str) -> List[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(KUBERAY / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed: {out.stderr.strip()[:500]}"
    return [d for d in yaml.load_all(out.stdout, Loader=LOADER) if d is not None]


@pytest.fixture(scope="module")
def overlay_docs() -> Dict[str, List[dict]]:
    if shutil.which("kubectl"):
        return {o: render(o) for o in OVERLAYS}
    return {o: listed_docs(KUBERAY / "overlays" / o) for o in OVERLAYS}


# ---- the pieces of a manifest -------------------------------------------------------------------
def by_kind(docs: List[dict], kind: str) -> List[dict]:
    return [d for d in docs if d.get("kind") == kind]


def cluster_spec_of(job: dict, docs: List[dict]) -> Tuple[str, dict]:
    """(name, spec) of the RayCluster a RayJob runs on: its own, or the one its selector names."""
    spec = job["spec"]
    if "rayClusterSpec" in spec:
        return job["metadata"]["name"], spec["rayClusterSpec"]
    name = spec.get("clusterSelector", {}).get("ray.io/cluster")
    assert name, f"RayJob {job['metadata']['name']}: neither rayClusterSpec nor clusterSelector ray.io/cluster"
    found = [c for c in by_kind(docs, "RayCluster") if c["metadata"]["name"] == name]
    assert found, f"RayJob {job['metadata']['name']} selects RayCluster {name}, which this overlay does not define"
    return name, found[0]["spec"]


def cluster_specs(docs: List[dict]) -> List[Tuple[str, dict]]:
    specs = [(c["metadata"]["name"], c["spec"]) for c in by_kind(docs, "RayCluster")]
    specs += [(j["metadata"]["name"], j["spec"]["rayClusterSpec"]) for j in by_kind(docs, "RayJob") if "rayClusterSpec" in j["spec"]]
    specs += [(s["metadata"]["name"], s["spec"]["rayClusterConfig"]) for s in by_kind(docs, "RayService")]
    return specs


def groups(spec: dict) -> List[Tuple[str, dict]]:
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay: the Ray container comes first


def autoscaler_view(name: str, spec: dict) -> dict:
    """node type -> {resources, min_workers, max_workers} as Ray's KubeRay autoscaler derives them."""
    config = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    return config["available_node_types"]


def entrypoint(job: dict) -> Tuple[str, List[str]]:
    """(config name, overrides) of a RayJob's `orchestra-ray train` entrypoint."""
    tokens = shlex.split(job["spec"]["entrypoint"])
    name = job["metadata"]["name"]
    assert tokens[:2] == ["orchestra-ray", "train"], f"RayJob {name}: entrypoint is not `orchestra-ray train ...`: {tokens[:3]}"
    assert len(tokens) > 2 and "=" not in tokens[2], f"RayJob {name}: entrypoint names no config"
    return tokens[2], tokens[3:]


def run_config(config: str, overrides: List[str]) -> OrchestraConfig:
    """The run's config, as `orchestra-ray train` loads and checks it."""
    return load_config(str(CONFIGS / f"{config}.yaml"), overrides)


def actor_demands(cfg: OrchestraConfig) -> Dict[str, dict]:
    """What each resource-tagged kind of actor asks for and how many of them may run at once."""
    r, t, pool = cfg.rollout, cfg.trainer, cfg.tools.code_pool
    return {
        "rollout workers (rollout.resources)": dict(
            resources=r.resources, count=r.autoscale.max_workers if r.autoscale.enabled else r.num_workers,
            cpus=r.num_cpus_per_worker, gpus=r.num_gpus_per_worker),
        # a learner group's ranks hold the reference too; one learner has a reference actor beside it
        "learner and reference model (trainer.resources)": dict(
            resources=t.resources, count=t.num_learners if t.num_learners > 1 else 2, cpus=t.num_cpus, gpus=t.num_gpus),
        "code-interpreter workers (tools.code_pool.resources)": dict(
            resources=pool.resources, count=pool.max_workers, cpus=pool.num_cpus, gpus=0),
    }


def secret_refs(obj, where="") -> List[Tuple[str, str, str]]:
    """(secret name, key, path) of every secretKeyRef below obj."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "secretKeyRef":
                found.append((v["name"], v["key"], where))
            else:
                found += secret_refs(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += secret_refs(v, f"{where}/{i}")
    return found


def documented_secrets() -> Dict[str, set]:
    """secret name -> keys, from the `kubectl create secret generic` commands of the README."""
    text = README.read_text().replace("\\\n", " ")
    out: Dict[str, set] = {}
    for line in text.splitlines():
        m = re.search(r"kubectl create secret generic ([a-z0-9.-]+)(.*)", line)
        if m:
            keys = re.findall(r"--from-(?:literal|file)=([A-Za-z0-9_.-]+)=", m.group(2))
            out.setdefault(m.group(1), set()).update(keys)
    return out


def jobs_of(overlay_docs) -> List[Tuple[str, dict, List[dict]]]:
    return [(o, j, docs) for o, docs in overlay_docs.items() for j in by_kind(docs, "RayJob")]


def job_id(item) -> str:
    return f"{item[0]}/{item[1]['metadata']['name']}"


# ---- files --------------------------------------------------------------------------------------
def test_every_manifest_parses_and_names_its_kind():
    files = manifest_files()
    assert files, f"no YAML under {KUBERAY}"
    for path in files:
        for doc in yaml_docs(path):
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), \
                f"{path.relative_to(REPO)}: a document without apiVersion and kind"


def test_every_ray_resource_matches_the_kuberay_v1_schema(validators):
    checked = 0
    for path in manifest_files():
        for doc in yaml_docs(path):
            if doc["kind"] in CRD_FILES:
                assert doc["apiVersion"] == "ray.io/v1", f"{path.relative_to(REPO)}: {doc['kind']} is not ray.io/v1"
                errors = schema_errors(validators, doc)
                assert not errors, f"{path.relative_to(REPO)} {doc['kind']} {doc['metadata']['name']}:\n" + "\n".join(errors)
                checked += 1
    assert checked >= 3, f"only {checked} Ray resources found under {KUBERAY}"


def test_the_validator_rejects_what_the_api_server_would(validators):
    """A misspelt field, a value outside an enum, a bad quantity and a duplicate port each fail."""
    job = yaml_docs(KUBERAY / "overlays" / "production" / "rayjob.yaml")[0]
    assert not schema_errors(validators, job)
    breakages = {
        "misspelt field": lambda j: j["spec"]["rayClusterSpec"].__setitem__("enableInTreeAutoScaling", True),
        "enum": lambda j: j["spec"]["rayClusterSpec"]["autoscalerOptions"].__setitem__("upscalingMode", "Fast"),
        "quantity": lambda j: ray_container(j["spec"]["rayClusterSpec"]["headGroupSpec"])["resources"]["limits"].__setitem__("memory", "32 GB"),
        "duplicate port": lambda j: ray_container(j["spec"]["rayClusterSpec"]["headGroupSpec"])["ports"].append({"name": "again", "containerPort": 8265}),
        "missing groupName": lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(job)
        breakage(broken)
        assert schema_errors(validators, broken), f"a {what} passed validation"


# ---- overlays -----------------------------------------------------------------------------------
def test_overlays_exist():
    assert {"quickstart", "production", "lora"} <= set(OVERLAYS)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_kubectl(overlay, validators):
    rendered = render(overlay)
    ids = lambda docs: sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert ids(rendered) == ids(listed_docs(KUBERAY / "overlays" / overlay)), "kustomize added or dropped resources"
    for doc in rendered:
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "orchestra-ray", \
            f"{doc['kind']} {doc['metadata']['name']} lacks the part-of label"
        if doc["kind"] in CRD_FILES:
            errors = schema_errors(validators, doc)
            assert not errors, f"rendered {overlay} {doc['kind']}:\n" + "\n".join(errors)


def test_overlay_documents_validate(overlay_docs, validators):
    for overlay, docs in overlay_docs.items():
        ray = [d for d in docs if d["kind"] in CRD_FILES]
        assert by_kind(docs, "RayJob"), f"overlay {overlay} has no RayJob"
        for doc in ray:
            errors = schema_errors(validators, doc)
            assert not errors, f"{overlay} {doc['kind']}:\n" + "\n".join(errors)


def test_worker_group_replicas_are_within_bounds(overlay_docs):
    for overlay, docs in overlay_docs.items():
        for name, spec in cluster_specs(docs):
            for group, g in groups(spec)[1:]:
                lo, hi = g.get("minReplicas", 0), g.get("maxReplicas")
                assert hi is not None, f"{overlay} {name}/{group}: no maxReplicas"
                assert 0 <= lo <= hi, f"{overlay} {name}/{group}: minReplicas {lo} > maxReplicas {hi}"
                assert lo <= g.get("replicas", lo) <= hi, f"{overlay} {name}/{group}: replicas outside [{lo}, {hi}]"


def test_operator_rules_the_schema_cannot_express(overlay_docs):
    """Checks KubeRay's admission makes: resources in one place, per-group idle timeouts only with
    autoscaler v2, a Ray version that has token auth, a cluster for every job."""
    for overlay, docs in overlay_docs.items():
        for name, spec in cluster_specs(docs):
            v2 = spec.get("autoscalerOptions", {}).get("version") == "v2"
            for group, g in groups(spec):
                start = g.get("rayStartParams", {})
                assert not (g.get("resources") and any(k in start for k in ("num-cpus", "num-gpus", "memory", "resources"))), \
                    f"{overlay} {name}/{group}: resources both in rayStartParams and in the group's resources"
                assert "labels" not in start, f"{overlay} {name}/{group}: labels belong in the group's labels field"
                assert "idleTimeoutSeconds" not in g or v2, f"{overlay} {name}/{group}: idleTimeoutSeconds needs autoscalerOptions.version v2"
            if spec.get("authOptions", {}).get("mode") == "token":
                version = tuple(int(x) for x in spec["rayVersion"].split("."))
                assert version >= (2, 52, 0), f"{overlay} {name}: token auth needs Ray 2.52 or later"
        for job in by_kind(docs, "RayJob"):
            cluster_spec_of(job, docs)
            if "clusterSelector" in job["spec"]:
                assert not job["spec"].get("backoffLimit"), f"{overlay}: backoffLimit does not work with clusterSelector"


def test_every_ray_container_uses_token_auth_and_exports_metrics(overlay_docs):
    for overlay, docs in overlay_docs.items():
        for name, spec in cluster_specs(docs):
            auth = spec.get("authOptions", {})
            assert auth.get("mode") == "token" and auth.get("secretName"), f"{overlay} {name}: authOptions token mode with a secretName"
            for group, g in groups(spec):
                c, where = ray_container(g), f"{overlay} {name}/{group}"
                env = {e["name"]: e for e in c.get("env", [])}
                assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE=token"
                ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
                assert (ref.get("name"), ref.get("key")) == (auth["secretName"], AUTH_SECRET_KEY), \
                    f"{where}: RAY_AUTH_TOKEN must come from {auth['secretName']}/{AUTH_SECRET_KEY}, the Secret KubeRay uses"
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                assert ports.get("metrics") == METRICS_PORT, f"{where}: container port 'metrics' {METRICS_PORT}"
                assert g["rayStartParams"].get("metrics-export-port", str(METRICS_PORT)) == str(METRICS_PORT), \
                    f"{where}: Ray exports metrics on another port than the container declares"


def test_secret_references_are_documented(overlay_docs):
    documented = documented_secrets()
    assert documented, f"{README.relative_to(REPO)} has no `kubectl create secret generic` command"
    for overlay, docs in overlay_docs.items():
        declared = {d["metadata"]["name"]: set(d.get("data", {})) | set(d.get("stringData", {})) for d in by_kind(docs, "Secret")}
        refs = [r for doc in docs for r in secret_refs(doc)]
        refs += [(spec["authOptions"]["secretName"], AUTH_SECRET_KEY, f"{name}/authOptions") for name, spec in cluster_specs(docs)]
        assert refs, f"overlay {overlay} references no Secret"
        for secret, key, where in refs:
            keys = declared.get(secret, set()) | documented.get(secret, set())
            assert key in keys, f"{overlay} {where}: Secret {secret} key {key} is neither declared nor created in the README"


def test_runs_volume_is_mounted_where_the_run_writes(overlay_docs):
    """run.root is on the claim in the head (the driver) and wherever the learner can run."""
    for item in jobs_of(overlay_docs):
        overlay, job, docs = item
        config, overrides = entrypoint(job)
        cfg = run_config(config, overrides)
        root = cfg.run.root
        claims = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
        cluster, spec = cluster_spec_of(job, docs)
        learner_resources = set(actor_demands(cfg)["learner and reference model (trainer.resources)"]["resources"])
        view = autoscaler_view(cluster, spec)
        for group, g in groups(spec):
            pod = g["template"]["spec"]
            volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
            assert set(volumes.values()) <= claims, f"{job_id(item)} {group}: claims {set(volumes.values()) - claims} are not in the overlay"
            mounts = {m["mountPath"]: m["name"] for m in ray_container(g).get("volumeMounts", []) if m["name"] in volumes}
            node_type = "headgroup" if group == "head" else group
            hosts_learner = group != "head" and (not learner_resources or learner_resources <= set(view[node_type]["resources"]))
            if group == "head" or hosts_learner:
                assert root in mounts, f"{job_id(item)} {group}: run.root {root} is not a mounted claim ({sorted(mounts)})"


# ---- the run the RayJobs start ------------------------------------------------------------------
def test_entrypoints_name_shipped_configs_and_plain_tokens(overlay_docs):
    for item in jobs_of(overlay_docs):
        config, overrides = entrypoint(item[1])
        assert (CONFIGS / f"{config}.yaml").is_file(), f"{job_id(item)}: config '{config}' is not in pipelines/configs"
        for token in overrides:
            assert "=" in token, f"{job_id(item)}: override '{token}' is not key=value"
            assert SAFE_TOKEN.match(token), f"{job_id(item)}: '{token}' would be changed by the submitter's shell"
        keys = [t.partition("=")[0] for t in overrides]
        assert len(keys) == len(set(keys)), f"{job_id(item)}: an override repeats"


def test_entrypoint_configs_load(overlay_docs):
    """The run each RayJob starts passes the CLI's own config checks."""
    for item in jobs_of(overlay_docs):
        config, overrides = entrypoint(item[1])
        try:
            run_config(config, overrides)
        except ConfigError as exc:
            pytest.fail(f"{job_id(item)}: {exc}")


def test_custom_resources_the_run_asks_for_exist_and_fit(overlay_docs):
    """Every custom resource the run's actors ask for is offered by a worker group whose pods also
    have the CPUs and GPUs those actors need, and the groups at their maximum hold all of them."""
    asked_somewhere = 0
    for item in jobs_of(overlay_docs):
        overlay, job, docs = item
        config, overrides = entrypoint(job)
        demands = actor_demands(run_config(config, overrides))
        view = {k: v for k, v in autoscaler_view(*cluster_spec_of(job, docs)).items() if k != "headgroup"}
        asked = set()
        for who, d in demands.items():
            for res, amount in d["resources"].items():
                asked.add(res)
                offering = {g: t for g, t in view.items() if t["resources"].get(res, 0) > 0}
                assert offering, f"{job_id(item)}: {who} ask for custom resource '{res}', which no worker group offers"
                capacity = 0
                for g, t in offering.items():
                    per_pod = int(t["resources"][res] // amount)
                    assert per_pod >= 1, f"{job_id(item)}: group {g} offers {res}={t['resources'][res]}, less than one actor's {amount}"
                    assert per_pod * d["cpus"] <= t["resources"].get("CPU", 0) + 1e-9, \
                        f"{job_id(item)}: group {g} fits {per_pod} {who} by '{res}' but not their {per_pod * d['cpus']:g} CPUs"
                    assert per_pod * d["gpus"] <= t["resources"].get("GPU", 0) + 1e-9, \
                        f"{job_id(item)}: group {g} fits {per_pod} {who} by '{res}' but not their {per_pod * d['gpus']:g} GPUs"
                    capacity += per_pod * t["max_workers"]
                assert capacity >= d["count"], f"{job_id(item)}: up to {d['count']} {who}, but the groups offering '{res}' hold {capacity}"
        offered = {r for t in view.values() for r in t["resources"] if r not in ("CPU", "GPU", "memory", "TPU")}
        assert offered <= asked, f"{job_id(item)}: worker groups offer {sorted(offered - asked)}, which the run never asks for"
        asked_somewhere += len(asked)
    assert asked_somewhere, "no RayJob asks for a custom resource"


def test_custom_resources_parse_for_operator_and_autoscaler(overlay_docs):
    """The operator (Go) trims quotes and reads JSON; the autoscaler drops one character each side
    and backslashes. Both must read the same resources."""
    for overlay, docs in overlay_docs.items():
        for name, spec in cluster_specs(docs):
            for group, g in groups(spec):
                text = g.get("rayStartParams", {}).get("resources")
                if text is None:
                    continue
                operator = json.loads(text.strip("'\"` "))
                autoscaler = json.loads(text[1:-1].replace("\\", ""))
                assert operator == autoscaler and all(isinstance(v, int) for v in operator.values()), \
                    f"{overlay} {name}/{group}: resources {text!r} read differently by operator and autoscaler"


def test_expert_keys_reach_every_ray_pod(overlay_docs):
    """Expert actors may land on any pod, and read their key from the pod's environment."""
    for item in jobs_of(overlay_docs):
        overlay, job, docs = item
        config, overrides = entrypoint(job)
        cfg = run_config(config, overrides)
        needed = {e.api_key_env for e in cfg.zoo.experts if e.api_key_env}
        for group, g in groups(cluster_spec_of(job, docs)[1]):
            env = {e["name"]: e for e in ray_container(g).get("env", [])}
            for var in needed:
                assert "secretKeyRef" in env.get(var, {}).get("valueFrom", {}), \
                    f"{job_id(item)} {group}: {var} (an expert's api_key_env) is not set from a Secret"


def test_entrypoints_pass_the_memory_plan(overlay_docs):
    """What each RayJob trains fits its pods: `orchestra-ray plan` with the entrypoint's arguments
    (the plan a run checks before any actor starts)."""
    from pipelines.plan import run_plan

    for item in jobs_of(overlay_docs):
        config, overrides = entrypoint(item[1])
        p = run_plan(run_config(config, overrides))
        assert p.fits, f"{job_id(item)}: {p.problems}"
        if p.layout.learner_device == "cuda":
            assert p.layout.gpu_bytes, f"{job_id(item)}: a GPU run names its GPUs' memory (plan.gpu_memory_gb)"


def test_lora_overlay_trains_qwen3_8b_on_one_learner_gpu(overlay_docs):
    (job,) = by_kind(overlay_docs["lora"], "RayJob")
    cfg = run_config(*entrypoint(job))
    assert cfg.policy.model == "Qwen/Qwen3-8B" and cfg.trainer.lora.rank > 0
    assert (cfg.trainer.num_learners, cfg.trainer.num_gpus) == (1, 1)
    assert (cfg.trainer.lr, cfg.trainer.kl_coef, cfg.rollout.max_turns) == (1e-4, 1e-4, 50)  # LoRA's usual rate


def test_production_trains_in_the_papers_setting(overlay_docs):
    (job,) = by_kind(overlay_docs["production"], "RayJob")
    config, overrides = entrypoint(job)
    cfg = run_config(config, overrides)
    assert cfg.policy.model == "Qwen/Qwen3-8B"
    assert cfg.trainer.lora.rank == 0 and cfg.trainer.num_learners == 8, "full-parameter, on a learner group"
    assert cfg.policy.dtype == "float32" and cfg.trainer.mixed_precision == "bfloat16", "1e-6 steps need float32 weights"
    assert cfg.rollout.dtype == "bfloat16", "rollouts are served in bfloat16"
    assert (cfg.trainer.lr, cfg.trainer.clip_low, cfg.trainer.clip_high, cfg.trainer.kl_coef) == (1e-6, 0.2, 0.28, 1e-4)
    assert (cfg.rollout.tasks_per_step, cfg.rollout.group_size, cfg.rollout.max_turns) == (16, 8, 50)
    assert cfg.run.root == "/mnt/runs"
    assert all(e.backend == "openai" for e in cfg.zoo.experts), "production experts are live endpoints"
    spec = job["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    opts = spec["autoscalerOptions"]
    assert opts["idleTimeoutSeconds"] > 0 and opts["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    view = autoscaler_view(job["metadata"]["name"], spec)
    gpu_groups = {g for g, t in view.items() if t["resources"].get("GPU")}
    assert {g for g, t in view.items() if "rollout" in t["resources"]} <= gpu_groups
    assert {g for g, t in view.items() if "learner" in t["resources"]} <= gpu_groups
    assert not {g for g, t in view.items() if "tool" in t["resources"]} & gpu_groups, "tool workers need no GPU"
    rollout = [t for t in view.values() if "rollout" in t["resources"]]
    assert any(t["min_workers"] < t["max_workers"] for t in rollout), "the rollout group scales"
