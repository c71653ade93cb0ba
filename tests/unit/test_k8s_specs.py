"""The PyTorchJob and TrainJob that l2vol.training.k8s builds, checked against the upstream CRDs (tests/data/crds).

What the schema validation covers: every field of the generated objects against the CRD's openAPIV3Schema of the
served version — types, enums, required fields, Kubernetes quantity patterns (cpu, memory, nvidia.com/gpu) and,
because the PyTorchJob CRD embeds the full PodTemplateSpec schema and the TrainJob CRD the schemas of
``trainer`` and ``runtimePatches``, the pod, container, env, securityContext and volume fields too. In "strict"
mode every object schema that lists its properties also rejects unknown ones: the API server would silently prune a
misspelt field, so the strict check is what catches it.
What it does not cover: the CEL rules (``x-kubernetes-validations``, e.g. TrainJob's metadata.name format and
``numProcPerNode >= 1``) — the builder's own validation enforces those two and is tested here; ``format`` keywords
(int32, int64); ``metadata`` (the CRDs declare it as a bare object; the API server validates it separately); and
whether a cluster's operator accepts the job (no cluster here).
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from l2vol.training import k8s
from l2vol.training.launch import torchrun_command

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"
IMAGE = "registry.example/l2vol:1.0-cuda"


def crd_schema(filename: str, version: str, *, strict: bool) -> dict:
    """``spec.versions[name=version].schema.openAPIV3Schema`` of a CRD file. x-kubernetes-* keywords are left in:
    jsonschema ignores unknown keywords. With ``strict``, objects that list properties get
    ``additionalProperties: false`` unless they preserve unknown fields or already say otherwise."""
    doc = _crd_doc(filename)
    (entry,) = [v for v in doc["spec"]["versions"] if v["name"] == version]
    schema = copy.deepcopy(entry["schema"]["openAPIV3Schema"])
    if strict:
        _close_objects(schema)
    return schema


@functools.cache
def _crd_doc(filename: str) -> dict:
    return yaml.load((CRDS / filename).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _close_objects(node) -> None:
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


SCHEMAS = {
    "PyTorchJob": ("kubeflow.org_pytorchjobs.yaml", "v1"),
    "TrainJob": ("trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
}
_cache: dict[tuple[str, bool], jsonschema.protocols.Validator] = {}


def validator(kind: str, strict: bool = True):
    key = (kind, strict)
    if key not in _cache:
        schema = crd_schema(*SCHEMAS[kind], strict=strict)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _cache[key] = cls(schema)
    return _cache[key]


def errors(obj: dict, strict: bool = True) -> list[str]:
    v = validator(obj["kind"], strict)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(obj)]


def _opts(**over) -> k8s.JobOptions:
    base = dict(name="rv-tabnet", image=IMAGE, config_map="rv-tabnet-config", nnodes=3, nproc_per_node=2)
    return k8s.JobOptions(**{**base, **over})


def _pods(job: dict) -> list[dict]:
    """The pod specs a job defines (PyTorchJob replicas, or the TrainJob's runtime patch)."""
    if job["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    return [patch["template"]["spec"]["template"]["spec"]]


def _env_of(job: dict) -> list[dict]:
    if job["kind"] == "PyTorchJob":
        return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]
    return job["spec"]["trainer"]["env"]


# --- schema validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpus", [0, 2])
@pytest.mark.parametrize("build", [k8s.pytorchjob_spec, k8s.trainjob_spec])
def test_generated_jobs_validate_against_crds(build, gpus):
    job = build(_opts(gpus_per_node=gpus, s3_endpoint="http://minio.l2vol.svc:9000", algorithm="parallel_de"))
    assert errors(job, strict=True) == []


def test_single_node_pytorchjob_has_no_worker_replicas_and_validates():
    job = k8s.pytorchjob_spec(_opts(nnodes=1, config="/data/configs/train.yaml", config_map=None))
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    assert errors(job) == []


@pytest.mark.parametrize(
    "kind, mutate, expect",
    [
        # wrong types
        ("PyTorchJob", lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"].update(replicas="2"), "is not of type"),
        ("PyTorchJob", lambda j: j["spec"]["runPolicy"].update(backoffLimit="3"), "is not of type"),
        ("TrainJob", lambda j: j["spec"]["trainer"].update(numNodes="3"), "is not of type"),
        # a memory quantity Kubernetes cannot parse
        ("TrainJob", lambda j: j["spec"]["trainer"]["resourcesPerNode"]["limits"].update(memory="4 GB"), "match"),
        # missing required fields
        ("PyTorchJob", lambda j: j["spec"].pop("pytorchReplicaSpecs"), "is a required property"),
        (
            "PyTorchJob",
            lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].pop("name"),
            "is a required property",
        ),
        ("TrainJob", lambda j: j["spec"]["runtimeRef"].pop("name"), "is a required property"),
        ("TrainJob", lambda j: j["spec"].pop("runtimeRef"), "is a required property"),
        ("TrainJob", lambda j: j["spec"]["trainer"]["env"].append({"value": "1"}), "is a required property"),
        (
            "PyTorchJob",
            lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["ports"][
                0
            ].update(containerPort="23456"),
            "is not of type",
        ),
    ],
)
def test_negative_controls_fail_validation(kind, mutate, expect):
    build = k8s.pytorchjob_spec if kind == "PyTorchJob" else k8s.trainjob_spec
    job = build(_opts())
    assert errors(job) == []
    mutate(job)
    found = errors(job)
    assert found, "a broken spec passed validation"
    assert any(expect in e for e in found), found


def test_misspelt_field_is_caught_only_by_the_strict_check():
    job = k8s.pytorchjob_spec(_opts())
    job["spec"]["nprocPerNodes"] = "2"  # the API server would prune this silently
    assert errors(job, strict=False) == []
    assert any("nprocPerNodes" in e for e in errors(job, strict=True))


def test_builder_enforces_the_crd_cel_rules_that_jsonschema_skips():
    # TrainJob CEL: metadata.name must match ^[a-z]([-a-z0-9]*[a-z0-9])?$ and numProcPerNode >= 1.
    with pytest.raises(ValueError, match="DNS-1035"):
        _opts(name="RV_TabNet")
    with pytest.raises(ValueError, match="DNS-1035"):
        _opts(name="a" * 51)
    with pytest.raises(ValueError, match="nproc_per_node"):
        _opts(nproc_per_node=0)
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        _opts(memory="4 GB")


# --- content -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [k8s.pytorchjob_spec, k8s.trainjob_spec])
def test_gpu_resources_only_when_requested(build):
    gpu = build(_opts(gpus_per_node=2))
    cpu = build(_opts(gpus_per_node=0))

    def resources(job):
        if job["kind"] == "PyTorchJob":
            return [
                r["template"]["spec"]["containers"][0]["resources"] for r in job["spec"]["pytorchReplicaSpecs"].values()
            ]
        return [job["spec"]["trainer"]["resourcesPerNode"]]

    for res in resources(gpu):
        assert res["limits"]["nvidia.com/gpu"] == "2"
        assert res["requests"]["cpu"] == "2" and res["limits"]["memory"] == "4Gi"
    for res in resources(cpu):
        assert "nvidia.com/gpu" not in res["limits"] and "nvidia.com/gpu" not in res["requests"]
    assert any(v["name"] == "dshm" for v in _pods(gpu)[0]["volumes"])
    with pytest.raises(ValueError, match="one process per GPU"):
        _opts(gpus_per_node=1, nproc_per_node=2)


@pytest.mark.parametrize("build", [k8s.pytorchjob_spec, k8s.trainjob_spec])
def test_secrets_are_referenced_never_inlined(build):
    job = build(_opts(s3_secret="minio-creds", secret_env={"L2VOL_REGISTRY_TOKEN": "registry/token"}))
    env = {e["name"]: e for e in _env_of(job)}
    for name, secret, key in [
        ("AWS_ACCESS_KEY_ID", "minio-creds", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "minio-creds", "AWS_SECRET_ACCESS_KEY"),
        ("L2VOL_REGISTRY_TOKEN", "registry", "token"),
    ]:
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
    # Plain variables with secret-like names are refused, so a credential cannot slip in as a literal.
    with pytest.raises(ValueError, match="looks like a secret"):
        _opts(env={"AWS_SECRET_ACCESS_KEY": "hunter2"})
    with pytest.raises(ValueError, match="set by the training operator"):
        _opts(env={"PET_NNODES": "4"})
    with pytest.raises(ValueError, match="secret-name/key"):
        _opts(secret_env={"DB_PASSWORD": "no-key-given"})


def test_plain_env_overrides_defaults():
    env = {e["name"]: e.get("value") for e in _env_of(k8s.pytorchjob_spec(_opts(env={"OMP_NUM_THREADS": "3"})))}
    assert env["OMP_NUM_THREADS"] == "3" and env["HOME"] == "/tmp"


def test_no_credentials_when_no_secret_is_named():
    env = {e["name"] for e in _env_of(k8s.trainjob_spec(_opts(s3_secret=None)))}
    assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.parametrize("build", [k8s.pytorchjob_spec, k8s.trainjob_spec])
def test_pods_run_as_non_root_with_read_only_root_and_writable_tmp(build):
    job = build(_opts(service_account="l2vol-trainer"))
    for pod in _pods(job):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["serviceAccountName"] == "l2vol-trainer"
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert volumes[mounts[k8s.CONFIG_MOUNT]]["configMap"]["name"] == "rv-tabnet-config"


def test_pytorchjob_shape_and_run_policy():
    job = k8s.pytorchjob_spec(_opts(restart_policy="OnFailure", backoff_limit=2, ttl_seconds_after_finished=600))
    spec = job["spec"]
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert spec["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2  # nnodes - 1
    assert {r["restartPolicy"] for r in spec["pytorchReplicaSpecs"].values()} == {"OnFailure"}
    assert spec["nprocPerNode"] == "2"
    assert spec["runPolicy"] == {"backoffLimit": 2, "cleanPodPolicy": "Running", "ttlSecondsAfterFinished": 600}
    (c,) = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert c["name"] == "pytorch"  # the operator takes MASTER_PORT from this container's pytorchjob-port
    assert c["ports"] == [{"containerPort": 23456, "name": "pytorchjob-port", "protocol": "TCP"}]


def _expand(command: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container command (undefined references stay as written)."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in command]


def test_pytorchjob_command_is_torchrun_command_for_the_operator_variables():
    opts = _opts(algorithm="ddp")
    job = k8s.pytorchjob_spec(opts)
    # What the Training Operator sets in pod <job>-worker-0: RANK = pod index (master 0, worker i -> i + 1),
    # MASTER_ADDR = <job>-master-0, MASTER_PORT = the master's pytorchjob-port.
    operator_env = {"RANK": "1", "MASTER_ADDR": "rv-tabnet-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "6"}
    (c,) = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert _expand(c["command"], operator_env) == torchrun_command(
        f"{k8s.CONFIG_MOUNT}/train.yaml",
        nproc=2,
        algorithm="ddp",
        nnodes=3,
        node_rank=1,
        master_addr="rv-tabnet-master-0",
        master_port=23456,
        standalone=False,
        python="python",
    )
    assert "args" not in c


def test_trainjob_command_leaves_topology_to_trainer_pet_variables():
    job = k8s.trainjob_spec(_opts(config="/data/configs/tabnet.yaml", config_map=None))
    trainer = job["spec"]["trainer"]
    assert trainer["command"] == ["python", "-m", "torch.distributed.run", "-m", "l2vol.training", "--config",
                                  "/data/configs/tabnet.yaml"]  # fmt: skip
    assert trainer["command"] == torchrun_command(
        "/data/configs/tabnet.yaml", nproc=2, python="python", topology_from_env=True
    )
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
    # Trainer's webhook rejects user values for the variables it injects.
    assert not [e["name"] for e in trainer["env"] if e["name"].startswith("PET_") or e["name"] in k8s.RESERVED_ENV]
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    (patched,) = _pods(job)[0]["containers"]
    assert patched["name"] == k8s.TRAINJOB_NODE


def test_render_job_yaml_applies_as_configmap_plus_job():
    text = k8s.render_job(
        "trainjob", name="rv-mlp", image=IMAGE, nnodes=2, config_text="model: mlp\nout: s3://l2vol/runs/rv-mlp\n"
    )
    cm, job = list(yaml.safe_load_all(text))
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "rv-mlp-config"
    assert cm["data"]["train.yaml"].startswith("model: mlp")
    assert job["spec"]["trainer"]["command"][-1] == f"{k8s.CONFIG_MOUNT}/train.yaml"
    assert errors(job) == []
    only_job = list(yaml.safe_load_all(k8s.render_job("pytorchjob", _opts())))
    assert [d["kind"] for d in only_job] == ["PyTorchJob"] and errors(only_job[0]) == []
    with pytest.raises(ValueError, match="kind must be"):
        k8s.render_job("mpijob", _opts())  # type: ignore[arg-type]


def test_config_source_is_required():
    with pytest.raises(ValueError, match="config_map"):
        k8s.JobOptions(name="x", image=IMAGE)


# --- cluster access without a cluster ----------------------------------------------------------------------------


def test_no_cluster_configured_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(k8s.ClusterNotConfiguredError, match="^no Kubernetes cluster configured: "):
        k8s.submit(k8s.trainjob_spec(_opts()))
    with pytest.raises(k8s.ClusterNotConfiguredError, match="KUBECONFIG"):
        k8s.wait("rv-tabnet", "default", kind="trainjob", timeout_s=1)


def test_job_phase_from_operator_conditions():
    def obj(*conds):
        return {"status": {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]}}

    assert k8s.job_phase({})[0] == "pending"
    assert k8s.job_phase(obj(("Created", "True", "", "")))[0] == "pending"
    assert k8s.job_phase(obj(("Created", "True", "", ""), ("Running", "True", "", "")))[0] == "running"
    # PyTorchJob: Running turns False when Succeeded turns True.
    assert k8s.job_phase(obj(("Running", "False", "", ""), ("Succeeded", "True", "", "done")))[0] == "succeeded"
    assert k8s.job_phase(obj(("Complete", "True", "JobsCompleted", "")))[0] == "succeeded"  # TrainJob
    phase, msg = k8s.job_phase(obj(("Running", "False", "", ""), ("Failed", "True", "BackoffLimitExceeded", "x")))
    assert phase == "failed" and "BackoffLimitExceeded" in msg
    assert k8s.pod_selector("j", "pytorchjob") == "training.kubeflow.org/job-name=j"
    assert k8s.pod_selector("j", "trainjob") == "jobset.sigs.k8s.io/jobset-name=j"


def test_importing_k8s_imports_no_sdk_or_torch():
    code = (
        "import sys, l2vol.training.k8s, l2vol.training.launch; "
        "bad = [m for m in ('kubernetes', 'kubeflow', 'torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the torchrun command every launcher shares ------------------------------------------------------------------


def test_torchrun_command_forms():
    single = torchrun_command("c.yaml", nproc=4, algorithm="ddp")
    assert single == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                      "--nproc-per-node=4", "-m", "l2vol.training", "--config", "c.yaml", "--algorithm", "ddp"]  # fmt: skip
    multi = torchrun_command("c.yaml", nproc=2, nnodes=3, node_rank=2, master_addr="10.0.0.5", master_port=29400)
    assert multi[3:9] == ["--nnodes=3", "--nproc-per-node=2", "--node-rank=2", "--master-addr=10.0.0.5",
                          "--master-port=29400", "--rdzv-backend=static"]  # fmt: skip
    assert torchrun_command("c.yaml", nproc=2, topology_from_env=True, python="python") == [
        "python", "-m", "torch.distributed.run", "-m", "l2vol.training", "--config", "c.yaml"]  # fmt: skip
    with pytest.raises(ValueError, match="master_port is required"):
        torchrun_command("c.yaml", nproc=1, nnodes=2, node_rank=0)
    with pytest.raises(ValueError, match="node_rank"):
        torchrun_command("c.yaml", nproc=1, nnodes=2, node_rank=2, master_port=1)
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command("c.yaml", nproc=0)


def test_thread_env_splits_cores_unless_set():
    from l2vol.training.launch import _cores, thread_env

    assert thread_env(2, {})["OMP_NUM_THREADS"] == str(max(1, _cores() // 2))
    assert thread_env(64, {})["OMP_NUM_THREADS"] == str(max(1, _cores() // 64))
    assert thread_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"


def test_failed_rank_is_read_from_torchrun_summary():
    from l2vol.training.launch import _blamed_rank

    summary = """\
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 17037)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -15 (pid: 17036)  (SIGTERM)
"""
    # rank 1 was stopped by torchrun after rank 0's error: blame the rank that exited with an error code.
    assert _blamed_rank(summary.splitlines()) == (0, 1)
    root_only = "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : 2 (pid: 9)"
    assert _blamed_rank(root_only.splitlines()) == (1, 2)
    assert _blamed_rank(["some other output"]) == (None, None)
