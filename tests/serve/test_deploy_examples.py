"""The Kubernetes examples in deploy/ parse and agree with what the servers offer: the ports of
sed-serve's defaults, readiness on the endpoints each server means by it, SIGTERM grace longer than
Triton's exit timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from sed_deploy.serve.server import EXIT_TIMEOUT_S

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def documents(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / name).read_text())}


@pytest.mark.parametrize("name, ready", [("sed-triton.yaml", "/v2/health/ready"),
                                         ("sed-serve-cpu.yaml", "/v2/models/sed/ready")])
def test_deployments_probe_readiness_and_expose_the_ports(name, ready):
    found = documents(name)
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8000 and ports["grpc"] == 8001
    assert container["readinessProbe"]["httpGet"]["path"] == ready
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["terminationGracePeriodSeconds"] > EXIT_TIMEOUT_S
    service = found["Service"]["spec"]
    assert service["selector"] == found["Deployment"]["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["ports"]} <= set(ports)


def test_the_kserve_example_runs_the_model_repository():
    service = documents("kserve-inferenceservice.yaml")["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and "--disable-auto-complete-config" in model["args"]
