"""Kubernetes training jobs: a PyTorchJob (kubeflow.org/v1, Training Operator) or a TrainJob
(trainer.kubeflow.org/v1alpha1, Kubeflow Trainer) that runs the training entrypoint under torchrun on N nodes.

This is the only module of l2vol that imports the kubernetes and kubeflow SDKs (an import-linter contract), and it
imports them inside the functions that need them, so importing it stays light.

Both jobs run the command that :func:`l2vol.training.launch.torchrun_command` builds, so a pod runs exactly what a
laptop runs; only where the topology comes from differs:

- PyTorchJob: the Training Operator sets ``MASTER_ADDR`` (``<job>-master-0``), ``MASTER_PORT`` (the master's port
  named ``pytorchjob-port``), ``RANK`` (the pod's index: master 0, worker i → i + 1) and ``WORLD_SIZE`` in every
  container; the container passes them to torchrun as ``--node-rank=$(RANK) --master-addr=$(MASTER_ADDR)
  --master-port=$(MASTER_PORT)`` (Kubernetes expands ``$(VAR)`` from the container's environment).
- TrainJob: Kubeflow Trainer's torch plugin sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``,
  ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT``, which torchrun reads as its own arguments; the command passes none.

Secrets (object-store credentials) are referenced by ``secretKeyRef``, never inlined; containers run as a non-root
user with a read-only root filesystem, no privilege escalation and all capabilities dropped.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from l2vol.config import StrictModel
from l2vol.training.launch import torchrun_command

PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
PYTORCHJOB_CONTAINER = "pytorch"  # the Training Operator reads the master port from the container of this name
PYTORCHJOB_PORT_NAME = "pytorchjob-port"
TRAINJOB_NODE = "node"  # replicated job and container name of the trainer in the torch runtimes
CONFIG_MOUNT = "/etc/l2vol"
JOB_LABELS = {"app.kubernetes.io/name": "l2vol", "app.kubernetes.io/component": "training"}
# The operators set these; a user value would be overridden (PyTorchJob) or rejected (TrainJob's webhook).
RESERVED_ENV = frozenset(
    {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK"}
)
_SECRETISH = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE", re.IGNORECASE)
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_REF = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$")
# Kubernetes resource.Quantity, as the CRDs' schemas state it.
_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

JobKind = Literal["pytorchjob", "trainjob"]


class ClusterNotConfiguredError(RuntimeError):
    """Neither a kubeconfig nor an in-cluster service account is available."""


class JobFailedError(RuntimeError):
    """The job reached a Failed condition; the message carries the operator's reason."""


class JobOptions(StrictModel):
    """What a training job needs, shared by the PyTorchJob and TrainJob builders."""

    name: str = Field(description="job name: a DNS-1035 label (pods and services are named after it)")
    image: str = Field(min_length=1, description="the l2vol image (CPU or CUDA variant)")
    config: str | None = Field(
        None,
        description="path of the training config inside the pod (baked into the image or on a mounted volume); "
        f"with config_map it is {CONFIG_MOUNT}/<config_key>",
    )
    config_map: str | None = Field(None, description="ConfigMap holding the config, mounted read-only")
    config_key: str = Field("train.yaml", description="key of the config in config_map")
    algorithm: str | None = Field(None, description="overrides the config's algorithm (--algorithm)")
    namespace: str | None = None
    nnodes: int = Field(1, ge=1, le=1024, description="pods (nodes)")
    nproc_per_node: int = Field(1, ge=1, le=64, description="processes per pod (GPUs per pod on CUDA)")
    gpus_per_node: int = Field(0, ge=0, le=64, description="nvidia.com/gpu per pod (limits)")
    cpu: str = Field("2", description="CPU request per pod")
    memory: str = Field("4Gi", description="memory request and limit per pod")
    cpu_limit: str | None = Field(None, description="CPU limit per pod (none by default: no CFS throttling)")
    s3_endpoint: str | None = Field(None, description="L2VOL_S3_ENDPOINT, e.g. http://minio.l2vol.svc:9000")
    s3_secret: str | None = Field(
        "l2vol-s3", description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY keys; None: no credentials"
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="more variables from Secrets: ENV_NAME -> 'secret-name/key'"
    )
    env: dict[str, str] = Field(default_factory=dict, description="plain, non-secret variables")
    restart_policy: Literal["OnFailure", "Never", "Always", "ExitCode"] = "OnFailure"
    backoff_limit: int = Field(3, ge=0)
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"
    ttl_seconds_after_finished: int | None = Field(86400, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1)
    service_account: str | None = "l2vol-trainer"
    run_as_user: int = Field(1000, ge=1, description="non-root UID (and GID) of the containers")
    master_port: int = Field(23456, ge=1, le=65535, description="PyTorchJob master port (pytorchjob-port)")
    runtime: str = Field("torch-distributed", description="TrainJob: the torch ClusterTrainingRuntime to use")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    node_selector: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        # <name>-master-0, <name>-worker-N and <name>-node-0-0 must stay DNS labels (<= 63 characters).
        if not _DNS1035.match(v) or len(v) > 50:
            raise ValueError(f"{v!r}: a job name must be a DNS-1035 label of at most 50 characters ([a-z][-a-z0-9]*)")
        return v

    @field_validator("cpu", "memory", "cpu_limit")
    @classmethod
    def _quantity(cls, v: str | None) -> str | None:
        if v is not None and not _QUANTITY.match(v):
            raise ValueError(f"{v!r}: not a Kubernetes quantity (e.g. '2', '1500m', '4Gi')")
        return v

    @field_validator("env")
    @classmethod
    def _plain_env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _ENV_NAME.match(k):
                raise ValueError(f"env {k!r}: not a valid variable name")
            if k in RESERVED_ENV or k.startswith("PET_"):
                raise ValueError(f"env {k}: set by the training operator, cannot be set by the job")
            if _SECRETISH.search(k):
                raise ValueError(f"env {k}: looks like a secret; reference it with secret_env {{'{k}': 'secret/key'}}")
        return v

    @field_validator("secret_env")
    @classmethod
    def _secret_refs(cls, v: dict[str, str]) -> dict[str, str]:
        for k, ref in v.items():
            if not _ENV_NAME.match(k):
                raise ValueError(f"secret_env {k!r}: not a valid variable name")
            if k in RESERVED_ENV or k.startswith("PET_"):
                raise ValueError(f"secret_env {k}: set by the training operator, cannot be set by the job")
            if not _SECRET_REF.match(ref):
                raise ValueError(f"secret_env {k}={ref!r}: expected 'secret-name/key'")
        return v

    @model_validator(mode="after")
    def _config_source(self) -> JobOptions:
        if self.config is None and self.config_map is None:
            raise ValueError("give config (a path or URI inside the pod) or config_map (a ConfigMap to mount)")
        if self.gpus_per_node and self.nproc_per_node > self.gpus_per_node:
            raise ValueError(
                f"nproc_per_node={self.nproc_per_node} exceeds gpus_per_node={self.gpus_per_node}: one process per GPU"
            )
        return self

    @property
    def config_in_pod(self) -> str:
        if self.config is not None:
            return self.config
        return f"{CONFIG_MOUNT}/{self.config_key}"


def _options(options: JobOptions | None, fields: dict[str, Any]) -> JobOptions:
    if options is None:
        return JobOptions(**fields)
    if fields:
        return JobOptions.model_validate({**options.model_dump(), **fields})
    return options


# --- pod pieces shared by both kinds (plain dicts in Kubernetes field names) ---------------------------------------


def _env(opts: JobOptions) -> list[dict]:
    """Plain variables (defaults, then the job's ``env``, which may override them) and Secret references."""
    plain = {
        # Writable locations on a read-only root filesystem (matplotlib, caches).
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "XDG_CACHE_HOME": "/tmp/.cache",
        "PYTHONUNBUFFERED": "1",
        # cores / processes, as the local launcher does; the config's `threads` still wins inside the run.
        "OMP_NUM_THREADS": str(max(1, _cpu_count(opts.cpu) // opts.nproc_per_node)),
    }
    if opts.s3_endpoint:
        plain["L2VOL_S3_ENDPOINT"] = opts.s3_endpoint
    plain |= opts.env
    secret_env = {}
    if opts.s3_secret:
        secret_env |= {
            "AWS_ACCESS_KEY_ID": f"{opts.s3_secret}/AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": f"{opts.s3_secret}/AWS_SECRET_ACCESS_KEY",
        }
    secret_env |= opts.secret_env
    clash = sorted(set(plain) & set(secret_env))
    if clash:
        raise ValueError(f"env {clash}: given both as a plain value and from a Secret")
    env: list[dict] = [{"name": k, "value": v} for k, v in plain.items()]
    for name, ref in secret_env.items():
        secret, key = ref.split("/", 1)
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def _resources(opts: JobOptions) -> dict:
    requests = {"cpu": opts.cpu, "memory": opts.memory}
    limits = {"memory": opts.memory}
    if opts.cpu_limit:
        limits["cpu"] = opts.cpu_limit
    if opts.gpus_per_node:
        limits["nvidia.com/gpu"] = str(opts.gpus_per_node)
        requests["nvidia.com/gpu"] = str(opts.gpus_per_node)
    return {"requests": requests, "limits": limits}


def _container_security() -> dict:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security(opts: JobOptions) -> dict:
    uid = opts.run_as_user
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(opts: JobOptions) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if opts.gpus_per_node:  # NCCL needs more shared memory than the container default
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if opts.config_map:
        volumes.append({"name": "config", "configMap": {"name": opts.config_map}})
        mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True})
    return volumes, mounts


def _tolerations(opts: JobOptions) -> list[dict]:
    if not opts.gpus_per_node:
        return []
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _metadata(opts: JobOptions) -> dict:
    meta: dict[str, Any] = {"name": opts.name, "labels": {**JOB_LABELS, **opts.labels}}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


def _cpu_count(q: str) -> int:
    """Whole CPUs in a Kubernetes CPU quantity ("2", "1500m")."""
    try:
        return int(float(q[:-1]) / 1000) if q.endswith("m") else int(float(q))
    except ValueError as exc:
        raise ValueError(f"cpu {q!r}: not a CPU quantity like '2' or '1500m'") from exc


# --- PyTorchJob ------------------------------------------------------------------------------------------------------


def pytorchjob_command(opts: JobOptions) -> list[str]:
    """The container command of a PyTorchJob pod: torchrun with the operator's variables as ``$(VAR)``."""
    return torchrun_command(
        opts.config_in_pod,
        nproc=opts.nproc_per_node,
        algorithm=opts.algorithm,
        nnodes=opts.nnodes,
        node_rank="$(RANK)",
        master_addr="$(MASTER_ADDR)",
        master_port="$(MASTER_PORT)",
        standalone=False,
        python="python",
    )


def pytorchjob_spec(options: JobOptions | None = None, /, **fields: Any) -> dict:
    """A kubeflow.org/v1 PyTorchJob (built with the kubeflow-training SDK models) as a plain dict.

    One Master and ``nnodes - 1`` Workers, each running :func:`pytorchjob_command` in a container named
    ``pytorch`` with the port ``pytorchjob-port`` (from which the operator takes MASTER_PORT).
    """
    from kubeflow.training import models as m
    from kubernetes import client as k

    opts = _options(options, fields)
    volumes, mounts = _volumes(opts)
    container = k.V1Container(
        name=PYTORCHJOB_CONTAINER,
        image=opts.image,
        image_pull_policy=opts.image_pull_policy,
        command=pytorchjob_command(opts),
        env=[_env_var(k, e) for e in _env(opts)],
        ports=[k.V1ContainerPort(name=PYTORCHJOB_PORT_NAME, container_port=opts.master_port, protocol="TCP")],
        resources=k.V1ResourceRequirements(**_resources(opts)),
        security_context=k.V1SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k.V1Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[
            k.V1VolumeMount(name=v["name"], mount_path=v["mountPath"], read_only=v.get("readOnly")) for v in mounts
        ],
    )
    pod_sec = _pod_security(opts)
    pod = k.V1PodSpec(
        containers=[container],
        service_account_name=opts.service_account,
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=pod_sec["runAsUser"],
            run_as_group=pod_sec["runAsGroup"],
            fs_group=pod_sec["fsGroup"],
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volumes=[_volume(k, v) for v in volumes],
        tolerations=[k.V1Toleration(**t) for t in _tolerations(opts)] or None,
        node_selector=opts.node_selector or None,
    )
    template = k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels={**JOB_LABELS, **opts.labels}), spec=pod)
    replicas = {"Master": m.KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy=opts.restart_policy, template=template)}
    if opts.nnodes > 1:
        replicas["Worker"] = m.KubeflowOrgV1ReplicaSpec(
            replicas=opts.nnodes - 1, restart_policy=opts.restart_policy, template=template
        )
    job = m.KubeflowOrgV1PyTorchJob(
        api_version=f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        kind="PyTorchJob",
        metadata=k.V1ObjectMeta(**_metadata(opts)),
        spec=m.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(opts.nproc_per_node),
            pytorch_replica_specs=replicas,
            run_policy=m.KubeflowOrgV1RunPolicy(
                backoff_limit=opts.backoff_limit,
                clean_pod_policy=opts.clean_pod_policy,
                ttl_seconds_after_finished=opts.ttl_seconds_after_finished,
                active_deadline_seconds=opts.active_deadline_seconds,
            ),
        ),
    )
    return k.ApiClient().sanitize_for_serialization(job)


def _env_var(k, e: dict):
    if "valueFrom" in e:
        ref = e["valueFrom"]["secretKeyRef"]
        return k.V1EnvVar(
            name=e["name"],
            value_from=k.V1EnvVarSource(secret_key_ref=k.V1SecretKeySelector(name=ref["name"], key=ref["key"])),
        )
    return k.V1EnvVar(name=e["name"], value=e["value"])


def _volume(k, v: dict):
    if "configMap" in v:
        return k.V1Volume(name=v["name"], config_map=k.V1ConfigMapVolumeSource(name=v["configMap"]["name"]))
    return k.V1Volume(name=v["name"], empty_dir=k.V1EmptyDirVolumeSource(medium=v["emptyDir"].get("medium")))


# --- TrainJob --------------------------------------------------------------------------------------------------------


def trainjob_command(opts: JobOptions) -> list[str]:
    """The trainer command of a TrainJob: torchrun taking its topology from Trainer's ``PET_*`` variables."""
    return torchrun_command(
        opts.config_in_pod,
        nproc=opts.nproc_per_node,
        algorithm=opts.algorithm,
        python="python",
        topology_from_env=True,
    )


def trainjob_spec(options: JobOptions | None = None, /, **fields: Any) -> dict:
    """A trainer.kubeflow.org/v1alpha1 TrainJob as a plain dict (the installed SDKs have no models for it).

    ``runtimeRef`` names a torch ClusterTrainingRuntime (``torch-distributed`` by default); ``trainer`` carries the
    image, command, ``numNodes``, ``numProcPerNode``, ``resourcesPerNode`` and env; a ``runtimePatches`` entry adds
    what the trainer field cannot express: the non-root security contexts, the service account, the ``/tmp``
    emptyDir and the config ConfigMap mount (on the runtime's ``node`` job and container).
    """
    opts = _options(options, fields)
    volumes, mounts = _volumes(opts)
    pod_spec: dict[str, Any] = {
        "securityContext": _pod_security(opts),
        "volumes": volumes,
        "containers": [{"name": TRAINJOB_NODE, "securityContext": _container_security(), "volumeMounts": mounts}],
    }
    if opts.service_account:
        pod_spec["serviceAccountName"] = opts.service_account
    if opts.node_selector:
        pod_spec["nodeSelector"] = dict(opts.node_selector)
    if _tolerations(opts):
        pod_spec["tolerations"] = _tolerations(opts)
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": TRAINJOB_GROUP, "kind": "ClusterTrainingRuntime", "name": opts.runtime},
        "trainer": {
            "image": opts.image,
            "command": trainjob_command(opts),
            "numNodes": opts.nnodes,
            "numProcPerNode": opts.nproc_per_node,
            "resourcesPerNode": _resources(opts),
            "env": _env(opts),
        },
        "runtimePatches": [
            {
                "manager": "l2vol.training.k8s",
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": TRAINJOB_NODE,
                                    "template": {
                                        "metadata": {"labels": {**JOB_LABELS, **opts.labels}},
                                        "spec": {"template": {"spec": pod_spec}},
                                    },
                                }
                            ]
                        }
                    }
                },
            }
        ],
    }
    if opts.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = opts.active_deadline_seconds
    return {
        "apiVersion": f"{TRAINJOB_GROUP}/{TRAINJOB_VERSION}",
        "kind": "TrainJob",
        "metadata": _metadata(opts),
        "spec": spec,
    }


# --- rendering -------------------------------------------------------------------------------------------------------


def configmap_spec(name: str, config_text: str, *, key: str = "train.yaml", namespace: str | None = None) -> dict:
    """A ConfigMap holding a training config (mounted by a job built with ``config_map=name``)."""
    if not _DNS1035.match(name.replace(".", "-")):
        raise ValueError(f"{name!r}: not a valid ConfigMap name")
    meta: dict[str, Any] = {"name": name, "labels": dict(JOB_LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {key: config_text}}


def job_spec(kind: JobKind, options: JobOptions | None = None, /, **fields: Any) -> dict:
    if kind == "pytorchjob":
        return pytorchjob_spec(options, **fields)
    if kind == "trainjob":
        return trainjob_spec(options, **fields)
    raise ValueError(f"kind must be 'pytorchjob' or 'trainjob', got {kind!r}")


def render_job(
    kind: JobKind, options: JobOptions | None = None, /, *, config_text: str | None = None, **fields: Any
) -> str:
    """YAML for ``kubectl apply -f -``: the job, preceded by its ConfigMap when ``config_text`` is given (then
    ``config_map`` defaults to ``<name>-config``)."""
    import yaml

    base = {**(options.model_dump() if options is not None else {}), **fields}
    if config_text is not None:
        if base.get("config") is not None:
            raise ValueError("config_text is mounted from a ConfigMap; do not also give config")
        if base.get("config_map") is None and base.get("name"):
            base["config_map"] = f"{base['name']}-config"
    opts = JobOptions.model_validate(base)
    docs = []
    if config_text is not None:
        docs.append(configmap_spec(opts.config_map, config_text, key=opts.config_key, namespace=opts.namespace))
    docs.append(job_spec(kind, opts))

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str):  # multi-line strings (the config) as readable | blocks
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


# --- cluster access --------------------------------------------------------------------------------------------------


def _kind_of(obj_or_kind: dict | str) -> JobKind:
    kind = obj_or_kind.get("kind", "") if isinstance(obj_or_kind, dict) else obj_or_kind
    lowered = kind.lower()
    if lowered in ("pytorchjob", "trainjob"):
        return lowered  # type: ignore[return-value]
    raise ValueError(f"kind must be PyTorchJob or TrainJob, got {kind!r}")


def _crd(kind: JobKind) -> tuple[str, str, str]:
    if kind == "pytorchjob":
        return PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL
    return TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL


def api_client(kubeconfig: str | None = None, context: str | None = None):
    """A kubernetes ApiClient from the in-cluster service account or a kubeconfig ($KUBECONFIG, ~/.kube/config).

    Raises :class:`ClusterNotConfiguredError` when neither is available. The global client configuration is left
    untouched.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    problems = []
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        except config.ConfigException as exc:
            problems.append(f"not in a cluster ({exc})")
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        return client.ApiClient(cfg)
    except (config.ConfigException, FileNotFoundError, OSError) as exc:
        problems.append(f"no usable kubeconfig ({exc})")
    raise ClusterNotConfiguredError(
        "no Kubernetes cluster configured: " + "; ".join(problems) + ". Set KUBECONFIG or run inside a pod with a "
        "service account, or render the job with render_job() and apply it with kubectl."
    )


def submit(spec: dict, namespace: str | None = None, *, api=None) -> dict:
    """Create the job ``spec`` (from :func:`pytorchjob_spec` or :func:`trainjob_spec`); returns the created object."""
    from kubernetes import client

    kind = _kind_of(spec)
    group, version, plural = _crd(kind)
    ns = namespace or spec.get("metadata", {}).get("namespace") or "default"
    custom = client.CustomObjectsApi(api or api_client())
    return custom.create_namespaced_custom_object(group, version, ns, plural, spec)


def job_phase(obj: dict) -> tuple[Literal["pending", "running", "succeeded", "failed"], str]:
    """The phase of a PyTorchJob or TrainJob from its status conditions, with the deciding condition's message.

    PyTorchJob conditions: Created, Running, Restarting, Succeeded, Failed. TrainJob: Created, Suspended,
    Complete, Failed.
    """
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}

    def true(t: str) -> bool:
        return str(conditions.get(t, {}).get("status", "")).lower() == "true"

    for t in ("Failed",):
        if true(t):
            c = conditions[t]
            return "failed", f"{c.get('reason', '')}: {c.get('message', '')}".strip(": ")
    for t in ("Succeeded", "Complete"):
        if true(t):
            return "succeeded", str(conditions[t].get("message", ""))
    if true("Running"):
        return "running", str(conditions["Running"].get("message", ""))
    return "pending", ""


def wait(
    name: str,
    namespace: str = "default",
    *,
    kind: JobKind = "pytorchjob",
    timeout_s: float = 3600.0,
    poll_s: float = 5.0,
    api=None,
) -> dict:
    """Poll the job until it succeeds (returns the object), fails (:class:`JobFailedError`) or ``timeout_s`` passes
    (:class:`TimeoutError`)."""
    from kubernetes import client

    group, version, plural = _crd(_kind_of(kind))
    custom = client.CustomObjectsApi(api or api_client())
    deadline = time.monotonic() + timeout_s
    phase, message = "pending", ""
    while True:
        obj = custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        phase, message = job_phase(obj)
        if phase == "succeeded":
            return obj
        if phase == "failed":
            raise JobFailedError(f"{kind} {namespace}/{name} failed: {message}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{kind} {namespace}/{name} still {phase} after {timeout_s:g} s")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def pod_selector(name: str, kind: JobKind) -> str:
    """Label selector of a job's pods (set by the Training Operator, or by JobSet for a TrainJob)."""
    if _kind_of(kind) == "pytorchjob":
        return f"training.kubeflow.org/job-name={name}"
    return f"jobset.sigs.k8s.io/jobset-name={name}"


def stream_logs(
    name: str,
    namespace: str = "default",
    *,
    kind: JobKind = "pytorchjob",
    follow: bool = True,
    out: Callable[[str], None] = print,
    api=None,
) -> None:
    """Print every pod's log of the job, each line prefixed with the pod name; with ``follow`` until the pods end."""
    from kubernetes import client

    core = client.CoreV1Api(api or api_client())
    pods = core.list_namespaced_pod(namespace, label_selector=pod_selector(name, kind)).items
    if not pods:
        raise RuntimeError(f"{kind} {namespace}/{name}: no pods (yet); selector {pod_selector(name, kind)}")
    lock = threading.Lock()

    def one(pod_name: str) -> None:
        resp = core.read_namespaced_pod_log(pod_name, namespace, follow=follow, _preload_content=False)
        pending = b""
        try:
            for chunk in resp.stream():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                with lock:
                    for line in lines:
                        out(f"[{pod_name}] {line.decode(errors='replace')}")
            if pending:
                with lock:
                    out(f"[{pod_name}] {pending.decode(errors='replace')}")
        finally:
            resp.release_conn()

    threads = [threading.Thread(target=one, args=(p.metadata.name,), daemon=True) for p in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
