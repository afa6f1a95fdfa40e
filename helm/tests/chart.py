#!/usr/bin/env python3
"""Checks of the Sable chart with Helm's own engine (helm-python-sdk: Helm v4 as a library)
and the Kubernetes schemas (kubernetes-validate). Run by tests/e2e/deploy.rs; each
subcommand prints what it checked and exits non-zero on the first broken property.

  chart.py lint                      strict lint + render of the three ci/ values files,
                                     every object validated against Kubernetes 1.30,
                                     a wrong type and an unknown key refused by the schema
  chart.py render VALUES [JSON]      the rendered objects as one JSON list on stdout
                                     (JSON: more values, merged over VALUES)
  chart.py settings                  every field of the binary's Settings is settable
  chart.py scaling                   HPA / KEDA ScaledObject / PDBs as rendered
  chart.py compose                   deploy/compose.yaml against the Compose specification,
                                     and deploy/Dockerfile agreeing with it and the chart
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sable"
CI_VALUES = ["default-values.yaml", "production-values.yaml", "dev-values.yaml"]
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "sable", "sable"


def helm():
    import helm_python

    helm_python.disable_logging()
    return helm_python


def load_values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text()) or {}


def render(values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    """Every object the chart renders (hooks included), as Helm's template would."""
    chart = helm().Chart.load(CHART)
    chart.validate_schema(values)
    manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {}).setdefault("annotations", {})
                document["metadata"]["annotations"].setdefault("sable.test/template", path)
                objects.append(document)
    return objects


def notes(values: dict) -> str:
    chart = helm().Chart.load(CHART)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


# ---------------------------------------------------------------------------------------
# lint: acceptance 1


def crd_schema_check(obj: dict) -> None:
    """The custom resources have no Kubernetes schema: check the fields their operators
    require (KEDA ScaledObject, Prometheus Operator ServiceMonitor)."""
    kind = obj["kind"]
    spec = obj.get("spec", {})
    if kind == "ScaledObject":
        check(obj["apiVersion"] == "keda.sh/v1alpha1", "ScaledObject apiVersion")
        check(spec["scaleTargetRef"]["name"], "ScaledObject names its target")
        for trigger in spec["triggers"]:
            check(isinstance(trigger["type"], str), "trigger type")
            check(
                all(isinstance(v, str) for v in trigger["metadata"].values()),
                f"KEDA trigger metadata must be strings: {trigger['metadata']}",
            )
        for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            check(isinstance(spec[key], int), f"ScaledObject {key} must be an integer")
    elif kind == "ServiceMonitor":
        check(obj["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
        check(spec["selector"]["matchLabels"], "ServiceMonitor selects")
        for endpoint in spec["endpoints"]:
            check(isinstance(endpoint["port"], str), "ServiceMonitor port is a name")
    else:
        fail(f"no schema for {obj['apiVersion']} {kind}")


CRDS = ROOT / "helm" / "tests" / "crds"


def validate_custom_resources(objects: list[dict], label: str) -> None:
    """KEDA's and the Prometheus Operator's kinds against their CRDs' schemas
    (kubernetes-models, pinned in crds/package-lock.json; `npm ci` by ensure_helm_tools)."""
    import subprocess

    if not objects:
        return
    check((CRDS / "node_modules").is_dir(), f"{CRDS}/node_modules is missing: run scripts/test.sh (ensure_helm_tools)")
    result = subprocess.run(["node", str(CRDS / "validate.mjs")], input=json.dumps(objects), capture_output=True, text=True, cwd=CRDS)
    check(result.returncode == 0, f"{label}: {result.stderr.strip()}")
    check(result.stdout.count(": valid") == len(objects), f"{label}: the CRD check validated {result.stdout!r}")


def validate_objects(objects: list[dict], label: str) -> int:
    import kubernetes_validate

    validated = 0
    custom = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        obj["metadata"]["annotations"].pop("sable.test/template", None)
        if not obj["metadata"]["annotations"]:
            del obj["metadata"]["annotations"]
        where = f"{label}: {obj['kind']} {obj['metadata'].get('name')}"
        if obj["apiVersion"] in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1"):
            crd_schema_check(obj)
            custom.append(obj)
            validated += 1
            continue
        # 1.30, the oldest the chart supports (kubeVersion), and the newest known.
        for version in (KUBE_VERSION, kubernetes_validate.utils.latest_version()):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                fail(f"{where} does not validate against Kubernetes {version}: {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{where}: no Kubernetes {version} schema for {obj['apiVersion']}")
        validated += 1
    validate_custom_resources(custom, label)
    return validated


def latest_kube() -> str:
    import kubernetes_validate

    return kubernetes_validate.utils.latest_version()


def lint_report(values: dict) -> dict:
    return helm().lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}", namespace=NAMESPACE)


def cmd_lint() -> None:
    total = 0
    for name in CI_VALUES:
        values = load_values(name)
        report = lint_report(values)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += report.get("errors") or []
        check(not problems, f"helm lint --strict with ci/{name}: {problems}")
        objects = render(values)
        count = validate_objects(objects, name)
        check(count >= 10, f"ci/{name} rendered only {count} objects")
        kinds = sorted({o["kind"] for o in objects})
        print(f"ci/{name}: lint clean (strict), {count} objects valid for Kubernetes {KUBE_VERSION} and {latest_kube()} (custom resources: their CRDs): {', '.join(kinds)}")
        check("Sable" in notes(values), f"NOTES.txt of ci/{name} says nothing")
        total += count

    # The schema refuses a wrong type and an unknown top-level key, in lint and render.
    refused = {
        "a string where replicas are a number": {"gateway": {"replicaCount": "three"}},
        "a number where a setting is a string": {"settings": {"log_format": 7}},
        "a setting the binary does not have": {"settings": {"shutdown_grace": 1}},
        "an unknown top-level key": {"replicas": 3},
        "a wrong type in a ci values file": {**load_values("dev-values.yaml"), "worker": {"autoscaling": {"enabled": "yes"}}},
    }
    for what, values in refused.items():
        try:
            helm().Chart.load(CHART).validate_schema(values)
        except helm().HelmValuesError as error:
            message = str(error)
        else:
            fail(f"the schema accepted {what}: {values}")
        report = lint_report(values)
        lint_errors = [m for m in report.get("messages", []) if m.get("severity", 0) >= 3]
        check(lint_errors, f"helm lint accepted {what}")
        print(f"schema refuses {what}: {' '.join(message.split())[:160]}")
    # Neither a Secret of the chart nor an existing one: rendering stops with a reason.
    try:
        render({"secrets": {"create": False}})
    except helm().HelmRenderError as error:
        check("existingSecret" in str(error), f"an unclear refusal: {error}")
    else:
        fail("the chart rendered pods whose Secret nobody creates")

    documented = check_readme_lists_every_value()
    print(f"lint: {total} objects validated, {len(refused)} bad values refused, {documented} values documented in helm/sable/README.md")


ROLES = ("gateway", "worker", "mcpSidecar", "cron")
# Values documented as one block (their keys are the containers' own settings).
OPAQUE = ("podSecurityContext", "securityContext", "resources", "settings")


def value_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in OPAQUE:
            paths += value_paths(value, path)
        else:
            paths.append(path)
    return paths


def check_readme_lists_every_value() -> int:
    """Every value of values.yaml is named in the chart README (a role's shared keys as
    `<role>.key`, settings keys by name)."""
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths = value_paths(values)
    for path in paths:
        head, _, rest = path.partition(".")
        forms = [path, f"{path}.*"]
        if head in ROLES:
            forms.append(f"<role>.{rest}")
        stem, _, last = path.rpartition(".")
        forms.append(f"{stem}.*")
        check(any(f"`{form}`" in readme or f"/ `{last}`" in readme and f"`{stem}." in readme for form in forms), f"helm/sable/README.md does not list the value {path}")
    for key in values["settings"]:
        check(f"`{key}`" in readme, f"helm/sable/README.md does not list settings.{key}")
    return len(paths) + len(values["settings"])


# ---------------------------------------------------------------------------------------
# settings: every field of the binary's Settings is settable from values


# Settings the chart derives, and the value that sets each (checked by rendering).
DERIVED = {
    "database_url": "database.url (or SABLE_DATABASE_URL in secrets.existingSecret)",
    "nats_url": "nats.url (or secrets.natsUrl)",
    "gateway_addr": "gateway.port",
    "metrics_addr": "worker.metricsPort / cron.metricsPort / mcpSidecar.metricsPort",
    "mcp_sidecar_addr": "mcpSidecar.grpcPort",
    "mcp_sidecar_url": "mcpSidecar.enabled + mcpSidecar.service.port",
    "agents_dir": "agents.defaults + agents.files (mounted)",
    "skills_dir": "skills.defaults + skills.files (mounted)",
    "bindings_file": "config.files[bindings.toml]",
    "providers_file": "config.files[providers.toml]",
    "models_file": "config.files[models.toml]",
    "mcp_file": "config.files[mcp.toml]",
    "secrets_key": "secrets.secretsKey",
    "admin_key": "secrets.adminKey",
    "langfuse_public_key": "secrets.langfusePublicKey",
    "langfuse_secret_key": "secrets.langfuseSecretKey",
    "worker_id": "each pod's name (HOSTNAME): one id per replica",
}


def settings_fields() -> dict[str, str]:
    """`pub name: Type` of `pub struct Settings` in crates/sable-cli/src/settings.rs."""
    source = (ROOT / "crates/sable-cli/src/settings.rs").read_text()
    body = re.search(r"pub struct Settings \{(.*?)\n\}", source, re.S)
    check(body is not None, "no `pub struct Settings` in settings.rs")
    fields = dict(re.findall(r"^\s*pub (\w+): ([^,\n]+),", body.group(1), re.M))
    check(len(fields) > 40, f"only {len(fields)} settings found: the parser is out of date")
    return fields


def json_type_of(rust: str) -> tuple[str, bool]:
    nullable = rust.startswith("Option<")
    inner = rust[len("Option<"):-1] if nullable else rust
    if re.fullmatch(r"u8|u16|u32|u64|usize|i32|i64", inner):
        return "integer", nullable
    if inner in ("String", "PathBuf", "Secret", "LogFormat", "CapturePolicy"):
        return "string", nullable
    if inner == "bool":
        return "boolean", nullable
    if inner.startswith("Vec<"):
        return "array", nullable
    if inner.startswith("HashMap<"):
        return "object", nullable
    fail(f"no JSON type known for Rust type {rust}")
    raise AssertionError


def sample_of(json_type: str, name: str):
    if name == "audit_retention_orgs":
        return {"0190e7a4-0000-7000-8000-000000000000": 365}
    return {
        "integer": 4321,
        "string": {"log_format": "json", "capture_content": "full", "nats_prefix": "sample-prefix"}.get(name, f"sample-{name}"),
        "boolean": True,
        "array": [f"sample-{name}"],
        "object": {"0190e7a4-0000-7000-8000-000000000000": "full"},
    }[json_type]


def effective_settings(objects: list[dict], deployment: str) -> dict:
    """What one Deployment's binary would read: its mounted sable.toml, then its env."""
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    pod = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {}
    for source in container.get("envFrom", []):
        secret = secrets.get(source["secretRef"]["name"], {})
        env.update(secret.get("stringData", {}))
    env.update({e["name"]: e.get("value") for e in container.get("env", [])})
    config_path = env["SABLE_CONFIG"]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    data = configmaps[volume["configMap"]["name"]]["data"]
    settings = tomllib.loads(data[config_path[len(mount["mountPath"]) + 1:]])
    for key, value in env.items():
        if key.startswith("SABLE_") and key != "SABLE_CONFIG":
            settings[key[len("SABLE_"):].lower()] = value
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "OPENAI_BASE_URL"):
        if key in env:
            settings[key.lower()] = env[key]
    settings["_env"] = env
    return settings


def cmd_settings() -> None:
    fields = settings_fields()
    schema = json.loads((CHART / "values.schema.json").read_text())
    settable = schema["properties"]["settings"]["properties"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["settings"]

    missing = sorted(set(fields) - set(settable) - set(DERIVED))
    check(not missing, f"settings the binary reads but values cannot set: {missing}")
    unknown = sorted((set(settable) | set(DERIVED)) - set(fields))
    check(not unknown, f"values name settings the binary does not have: {unknown}")
    both = sorted(set(settable) & set(DERIVED))
    check(not both, f"settings both derived and in values.settings: {both}")
    check(set(defaults) == set(settable), f"values.yaml settings and the schema differ: {sorted(set(defaults) ^ set(settable))}")
    check(schema["properties"]["settings"].get("additionalProperties") is False, "values.schema.json must refuse unknown settings")

    # Each settable field: the schema's type is the Rust type's, and a sample value set in
    # values reaches the sable.toml every role reads.
    samples = {}
    for name in settable:
        json_type, nullable = json_type_of(fields[name])
        declared = settable[name].get("type")
        declared = declared if isinstance(declared, list) else [declared]
        check(json_type in declared, f"settings.{name}: schema type {declared}, Rust type {fields[name]}")
        check(("null" in declared) == nullable, f"settings.{name}: null allowed in schema {declared} but Rust type is {fields[name]}")
        samples[name] = sample_of(json_type, name)
    samples["shutdown_grace_ms"] = 20000
    objects = render({"settings": samples})
    for deployment in ("sable-gateway", "sable-worker", "sable-cron", "sable-mcp-sidecar"):
        effective = effective_settings(objects, deployment)
        for name, value in samples.items():
            check(effective.get(name) == value, f"{deployment}: settings.{name}={value!r} reaches the binary as {effective.get(name)!r}")

    # Each derived field: changing its value changes what the binary reads.
    derived_values = {
        "database": {"url": "postgres://u:p@db.example:5433/x"},
        "nats": {"url": "nats://nats.example:4223"},
        "secrets": {"secretsKey": "a2V5", "adminKey": "platform-key-1", "langfusePublicKey": "pk-1", "langfuseSecretKey": "sk-1", "providerKeys": {"OPENAI_API_KEY": "sk-o"}},
        "gateway": {"port": 18080},
        "worker": {"metricsPort": 19464},
        "cron": {"metricsPort": 19465},
        "mcpSidecar": {"grpcPort": 15051, "metricsPort": 19466, "service": {"port": 15052}},
        "config": {"files": {"mcp.toml": "# none\n"}},
    }
    objects = render(derived_values)
    gateway = effective_settings(objects, "sable-gateway")
    worker = effective_settings(objects, "sable-worker")
    cron = effective_settings(objects, "sable-cron")
    sidecar = effective_settings(objects, "sable-mcp-sidecar")
    expect = {
        ("gateway", "database_url"): "postgres://u:p@db.example:5433/x",
        ("gateway", "nats_url"): "nats://nats.example:4223",
        ("gateway", "gateway_addr"): "0.0.0.0:18080",
        ("worker", "metrics_addr"): "0.0.0.0:19464",
        ("cron", "metrics_addr"): "0.0.0.0:19465",
        ("sidecar", "metrics_addr"): "0.0.0.0:19466",
        ("sidecar", "mcp_sidecar_addr"): "0.0.0.0:15051",
        ("worker", "mcp_sidecar_url"): "http://sable-mcp-sidecar:15052",
        ("gateway", "secrets_key"): "a2V5",
        ("gateway", "admin_key"): "platform-key-1",
        ("worker", "langfuse_public_key"): "pk-1",
        ("worker", "langfuse_secret_key"): "sk-1",
    }
    roles = {"gateway": gateway, "worker": worker, "cron": cron, "sidecar": sidecar}
    for (role, name), value in expect.items():
        check(roles[role].get(name) == value, f"{role}: {name} should be {value!r} from {DERIVED[name]}, is {roles[role].get(name)!r}")
    check(worker["_env"].get("OPENAI_API_KEY") == "sk-o", "secrets.providerKeys reach the roles' environment")
    check("worker_id" not in worker and "worker_id" not in settable, "worker_id must stay per pod")
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "sable-config")["data"]
    check(config.get("mcp.toml") == "# none\n", "config.files reach the mounted config folder")
    for name in ("agents_dir", "skills_dir", "bindings_file", "providers_file", "models_file", "mcp_file"):
        check(str(worker[name]).startswith("/etc/sable/"), f"{name} points into a mounted ConfigMap: {worker[name]}")
    # The image's own SABLE_* variables would beat the mounted sable.toml: none of them
    # may be a setting the chart takes from values (addresses are set per role in env).
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    image_env = {name.lower() for line in dockerfile.splitlines() if line.startswith("ENV ") for name in re.findall(r"SABLE_(\w+)=", line)}
    check(image_env, "deploy/Dockerfile sets no SABLE_ variable: the parser is out of date")
    shadowed = sorted(image_env & set(settable))
    check(not shadowed, f"deploy/Dockerfile sets {shadowed}, which would override values.settings in every pod")
    # And each role sets the addresses it listens on itself, whatever the image says.
    listens = {"gateway": ["gateway_addr"], "worker": ["metrics_addr"], "cron": ["metrics_addr"], "sidecar": ["metrics_addr", "mcp_sidecar_addr"]}
    roles = {"gateway": gateway, "worker": worker, "cron": cron, "sidecar": sidecar}
    for role, names in listens.items():
        for name in names:
            check(f"SABLE_{name.upper()}" in roles[role]["_env"], f"{role} does not set SABLE_{name.upper()} in its env")
    print(f"settings: {len(fields)} fields of Settings: {len(settable)} in values.settings (types match, each reaches every role's sable.toml), {len(DERIVED)} derived by the chart (each follows its value)")


# ---------------------------------------------------------------------------------------
# scaling: acceptance 3


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def cmd_scaling() -> None:
    default = render(load_values("default-values.yaml"))
    production = render(load_values("production-values.yaml"))
    dev = render(load_values("dev-values.yaml"))

    # Default: the workers scale on CPU through an HPA; no ScaledObject.
    hpa = by_kind(default, "HorizontalPodAutoscaler")
    check(set(hpa) == {"sable-worker"}, f"default values: HPAs {sorted(hpa)}")
    spec = hpa["sable-worker"]["spec"]
    check(spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sable-worker"}, f"HPA target {spec['scaleTargetRef']}")
    check(spec["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}], f"HPA metrics {spec['metrics']}")
    check(spec["minReplicas"] >= 2 and spec["maxReplicas"] > spec["minReplicas"], "HPA bounds")
    check(not by_kind(default, "ScaledObject"), "default values render a ScaledObject")
    worker = by_kind(default, "Deployment")["sable-worker"]
    check("replicas" not in worker["spec"], "an autoscaled Deployment must leave replicas to the autoscaler")
    check(worker["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].get("cpu"), "CPU scaling needs a CPU request")

    # Production: KEDA on the JetStream consumer's pending count, and no HPA of ours.
    scaled = by_kind(production, "ScaledObject")
    check(set(scaled) == {"sable-worker"}, f"production values: ScaledObjects {sorted(scaled)}")
    check(not by_kind(production, "HorizontalPodAutoscaler"), "KEDA makes its own HPA: ours must not compete")
    spec = scaled["sable-worker"]["spec"]
    check(spec["scaleTargetRef"]["name"] == "sable-worker", "ScaledObject target")
    trigger = spec["triggers"][0]
    check(trigger["type"] == "nats-jetstream", f"trigger {trigger['type']}")
    metadata = trigger["metadata"]
    check(metadata["stream"] == "SABLE_PROD_TURNS", f"the stream of prefix sable-prod is SABLE_PROD_TURNS, not {metadata['stream']}")
    check(metadata["consumer"] == "workers", "the workers' durable consumer is 'workers'")
    check(metadata["lagThreshold"] == "25", "lagThreshold from values")
    check(metadata["natsServerMonitoringEndpoint"] == "nats.messaging.svc.cluster.local:8222", "monitoring endpoint from values")
    check((spec["minReplicaCount"], spec["maxReplicaCount"]) == (3, 50), "KEDA bounds from values")
    check("replicas" not in by_kind(production, "Deployment")["sable-worker"]["spec"], "KEDA-scaled Deployment leaves replicas alone")

    # PDBs: gateway and workers (and cron) in default and production; each selects its pods.
    for label, objects in (("default", default), ("production", production)):
        pdbs = by_kind(objects, "PodDisruptionBudget")
        check({"sable-gateway", "sable-worker"} <= set(pdbs), f"{label}: PDBs {sorted(pdbs)}")
        deployments = by_kind(objects, "Deployment")
        for name, pdb in pdbs.items():
            selector = pdb["spec"]["selector"]["matchLabels"]
            pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
            check(selector.items() <= pod_labels.items(), f"{label}: PDB {name} selects no pod of its Deployment")
            check(pdb["spec"].get("maxUnavailable") == 1, f"{label}: PDB {name} lets one pod go at a time")
    check(not by_kind(dev, "PodDisruptionBudget") and not by_kind(dev, "HorizontalPodAutoscaler"), "dev values: no PDB, no HPA")
    check(by_kind(dev, "Deployment")["sable-worker"]["spec"]["replicas"] == 1, "dev values: one worker")

    # Termination grace exceeds shutdown_grace_ms in every values file.
    for label, objects in (("default", default), ("production", production), ("dev", dev)):
        for name, deployment in by_kind(objects, "Deployment").items():
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            shutdown_ms = int(effective_settings(objects, name)["shutdown_grace_ms"])
            check(grace * 1000 > shutdown_ms, f"{label}: {name} grace {grace}s does not exceed shutdown_grace_ms {shutdown_ms}")
    print("scaling: default values scale workers on CPU (HPA), production on the SABLE_PROD_TURNS/workers backlog (KEDA, no HPA); gateway and worker PDBs select their pods; every grace exceeds shutdown_grace_ms")


# ---------------------------------------------------------------------------------------
# compose: acceptance 4


def compose_schema() -> dict:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def cmd_compose() -> None:
    import jsonschema

    schema = compose_schema()
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    check(not errors, "deploy/compose.yaml: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5]))
    # A wrong type is refused by the same schema (the validation can fail).
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["ports"] = {"8080": 8080}
    check(list(validator.iter_errors(broken)), "the Compose schema accepted ports as a mapping")
    services = compose["services"]
    wanted = {"nats", "postgres", "migrate", "gateway", "worker-1", "worker-2", "mcp-sidecar", "cron", "otel-collector"}
    check(wanted <= set(services), f"compose services {sorted(services)} miss {sorted(wanted - set(services))}")
    check("-js" in services["nats"]["command"] and "--store_dir" in " ".join(services["nats"]["command"]), "NATS runs JetStream with file storage")
    for name in ("gateway", "worker-1", "worker-2", "cron", "mcp-sidecar"):
        depends = services[name].get("depends_on", {})
        if name != "mcp-sidecar":
            check(depends.get("migrate", {}).get("condition") == "service_completed_successfully", f"{name} starts after migrate succeeded")
    image = check_dockerfile()
    for name in ("migrate", "gateway", "worker-1", "worker-2", "mcp-sidecar", "cron"):
        check(services[name]["image"] == image["tag"], f"compose {name} runs {services[name]['image']}, not the Dockerfile's image")
        check(services[name]["read_only"] is True, f"compose {name}: read-only root filesystem")
    print(f"compose: deploy/compose.yaml valid against the Compose specification ({schema.get('$id', 'compose-spec.json')}), {len(services)} services")


def check_dockerfile() -> dict:
    """deploy/Dockerfile (no engine here to build it): multi-stage, a non-root final
    stage with the binary where the chart's command and Compose expect it, and the
    default config/, agents/, skills/ inside."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    check(len(stages) >= 2, "deploy/Dockerfile is not multi-stage")
    final = stages[-1]
    check(re.match(r"(debian:[\w.-]*slim|gcr\.io/distroless)", final) is not None, f"the runtime stage is neither Debian slim nor distroless: {final.splitlines()[0]}")
    user = re.findall(r"^USER (\S+)", final, re.M)
    check(user and not user[-1].startswith(("root", "0")), f"the image runs as {user}")
    run_as = int(yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"])
    check(user[-1].split(":")[0] == str(run_as), f"the image's user {user[-1]} is not the chart's runAsUser {run_as}")
    for folder in ("config", "agents", "skills"):
        check(re.search(rf"^COPY {folder}/ ", final, re.M), f"the image lacks the default {folder}/")
    command = render({})
    deployment = next(o for o in command if o["kind"] == "Deployment")
    binary = deployment["spec"]["template"]["spec"]["containers"][0]["command"][0]
    check(f"COPY --from=build /out/sable {binary}" in final, f"the image does not put sable at {binary}, the chart's command")
    check(f'ENTRYPOINT ["{binary}"]' in final, "the image's entrypoint is not the binary")
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return {"tag": compose["x-sable"]["image"]}


def cmd_render(values_file: str, extra: str | None) -> None:
    values = load_values(values_file) if values_file != "-" else {}
    if extra:
        values = merge(values, json.loads(extra))
    json.dump(render(values), sys.stdout)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main(argv: list[str]) -> None:
    os.chdir(ROOT)
    command = argv[1] if len(argv) > 1 else ""
    if command == "lint":
        cmd_lint()
    elif command == "render":
        cmd_render(argv[2], argv[3] if len(argv) > 3 else None)
    elif command == "settings":
        cmd_settings()
    elif command == "scaling":
        cmd_scaling()
    elif command == "compose":
        cmd_compose()
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
