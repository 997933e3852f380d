"""KubeRay manifests: built-in kinds valid against the Kubernetes schemas, RayCluster/RayJob fields,
non-root pods with requests and limits, and entrypoints that exist with the configs they name."""

import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from distrec.study import load_study
from distrec.study.sweep import load_sweep

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "k8s").glob("*.yaml"))


def cluster_specs(doc):
    if doc["kind"] == "RayCluster":
        return [doc["spec"]]
    if doc["kind"] == "RayJob" and "rayClusterSpec" in doc["spec"]:
        return [doc["spec"]["rayClusterSpec"]]
    return []


def pod_templates(doc):
    if doc["kind"] == "StatefulSet":
        yield doc["metadata"]["name"], doc["spec"]["template"]
    for spec in cluster_specs(doc):
        yield "head", spec["headGroupSpec"]["template"]
        for group in spec["workerGroupSpecs"]:
            yield group["groupName"], group["template"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield "submitter", doc["spec"]["submitterPodTemplate"]


def docs():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            yield path.name, doc


def test_there_are_cluster_and_job_manifests():
    kinds = {(name, d["kind"]) for name, d in docs()}
    assert {
        ("raycluster.yaml", "RayCluster"),
        ("rayjob-study.yaml", "RayJob"),
        ("rayjob-sweep.yaml", "RayJob"),
        ("optuna-db.yaml", "StatefulSet"),
        ("optuna-db.yaml", "Service"),
    } <= kinds
    assert all(d["apiVersion"] == "ray.io/v1" for _, d in docs() if d["kind"] in ("RayCluster", "RayJob"))


@pytest.mark.parametrize(
    "name,doc",
    [(n, d) for n, d in docs() if d["kind"] not in ("RayCluster", "RayJob")],
    ids=[f"{n}-{d['kind']}" for n, d in docs() if d["kind"] not in ("RayCluster", "RayJob")],
)
def test_built_in_kinds_are_valid(name, doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_every_ray_cluster_authenticates_with_a_token():
    specs = [spec for _, d in docs() for spec in cluster_specs(d)]
    assert len(specs) == 3 and all(spec["authOptions"] == {"mode": "token"} for spec in specs)


def test_the_sweeps_optuna_database_is_deployed_and_its_password_reaches_the_driver():
    sweep = next(d for n, d in docs() if n == "rayjob-sweep.yaml")
    url = load_sweep(REPO / shlex.split(sweep["spec"]["entrypoint"])[2])[0].storage
    host = url.split("@", 1)[1].split(":", 1)[0]
    service = next(d for n, d in docs() if d["kind"] == "Service" and d["metadata"]["name"] == host)
    database = next(d for n, d in docs() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == host)
    assert service["spec"]["selector"] == database["spec"]["template"]["metadata"]["labels"]
    env = database["spec"]["template"]["spec"]["containers"][0]["env"]
    secret = next(e["valueFrom"]["secretKeyRef"] for e in env if e["name"] == "POSTGRES_PASSWORD")
    head = sweep["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": secret}} in head["env"]
    assert (
        "psycopg2" in (REPO / "pyproject.toml").read_text() and '".[cluster]"' in (REPO / "k8s/Dockerfile").read_text()
    )


@pytest.mark.parametrize(
    "name,doc",
    [(n, d) for n, d in docs() if d["kind"] != "Service"],
    ids=[n for n, d in docs() if d["kind"] != "Service"],
)
def test_pod_templates_are_valid_non_root_and_bounded(name, doc):
    version = kubernetes_validate.latest_version()
    templates = list(pod_templates(doc))
    assert templates
    for group, template in templates:
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{name}-{group}"}, "template": template},
            version,
            strict=True,
        )
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, (
            name,
            group,
        )
        for c in pod["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, group, c["name"], kind)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(
    "name,doc", [(n, d) for n, d in docs() if cluster_specs(d)], ids=[n for n, d in docs() if cluster_specs(d)]
)
def test_cluster_groups_autoscale_within_bounds(name, doc):
    for spec in cluster_specs(doc):
        assert spec["enableInTreeAutoscaling"] is True
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        assert {"cpu", "gpu"} <= set(groups)
        for g in groups.values():
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
        assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"]


@pytest.mark.parametrize(
    "name,doc",
    [(n, d) for n, d in docs() if d["kind"] == "RayJob"],
    ids=[n for n, d in docs() if d["kind"] == "RayJob"],
)
def test_job_entrypoints_exist_with_their_configs(name, doc):
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("jobs/")
    assert (REPO / argv[1]).is_file(), argv[1]
    config = REPO / argv[2]
    assert config.is_file(), argv[2]
    {"jobs/study.py": load_study, "jobs/sweep.py": load_sweep}[argv[1]](config)  # validates every key
    assert "--out" in argv
    assert argv[argv.index("--out") + 1].startswith("s3://")  # results survive the cluster, every pod reaches them
    assert doc["spec"]["shutdownAfterJobFinishes"] is True


def test_dockerfile_runs_as_non_root_and_ships_jobs_and_configs():
    text = (REPO / "k8s/Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "COPY --chown=ray:users jobs ./jobs" in text and "COPY --chown=ray:users configs ./configs" in text
