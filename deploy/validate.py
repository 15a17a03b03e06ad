"""Checks for deploy/validate.sh that no off-the-shelf tool makes (needs PyYAML).

    python validate.py render-kustomize DIR          # fallback when no kubectl/kustomize
    python validate.py compose-policy FILE
    python validate.py k8s-policy RENDERED KUSTOMIZATION_DIR
    python validate.py alerts-structure RULES        # fallback when promtool is unavailable
    python validate.py alerts-policy RULES RUNBOOK

Each prints what is wrong and exits 1, or prints nothing and exits 0.
"""

import re
import sys
from pathlib import Path

import yaml

problems = []


def problem(message):
    problems.append(message)


def load_all(path):
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


# --- kustomize fallback --------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}


def render_kustomize(directory):
    """A subset of kustomize, enough for this base: resources (files), namespace, labels
    (metadata only, as with includeSelectors: false) and images."""
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    for key in set(kustomization) - known:
        problem(f"kustomization.yaml: fallback renderer does not support `{key}`")
    images = {i["name"]: i for i in kustomization.get("images", [])}
    out = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if not path.is_file():
            problem(f"kustomization.yaml: resource {resource} is not a file here")
            continue
        for doc in load_all(path):
            meta = doc.setdefault("metadata", {})
            if kustomization.get("namespace") and doc.get("kind") not in CLUSTER_SCOPED:
                meta["namespace"] = kustomization["namespace"]
            for entry in kustomization.get("labels", []):
                meta.setdefault("labels", {}).update(entry.get("pairs", {}))
            for container in containers_of(doc):
                image = images.get(container.get("image", "").split(":")[0])
                if image:
                    container["image"] = f'{image.get("newName", image["name"])}:{image.get("newTag", "latest")}'
            out.append(doc)
    if not problems:
        sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))


# --- docker compose ------------------------------------------------------------------------

def compose_policy(path):
    compose = yaml.safe_load(Path(path).read_text())
    services = compose.get("services", {})
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, dict):
            for target, spec in depends.items():
                if target not in services:
                    problem(f"{name}: depends on unknown service {target}")
                    continue
                condition = (spec or {}).get("condition")
                if condition == "service_healthy" and "healthcheck" not in services[target]:
                    problem(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
                if condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                    problem(f"{name}: waits for {target} to complete, but {target} restarts")
        long_running = service.get("restart", "no") != "no"
        if long_running and "healthcheck" not in service:
            problem(f"{name}: a long-running service without a healthcheck")
    for name, port in (("command-api", 8080), ("query-api", 8081), ("projector", 8082)):
        published = [str(p).split(":")[0] for p in services.get(name, {}).get("ports", [])]
        if str(port) not in published:
            problem(f"{name}: port {port} is not published")


# --- kubernetes ----------------------------------------------------------------------------

def containers_of(doc):
    spec = doc.get("spec", {})
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        pod = spec.get("template", {}).get("spec", {})
        return pod.get("containers", []) + pod.get("initContainers", [])
    return []


def pod_spec(doc):
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def k8s_policy(rendered, kustomization_dir):
    docs = load_all(rendered)
    if not docs:
        problem("nothing rendered")
        return
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    config = next(iter(by_kind.get("ConfigMap", {}).values()), {}).get("data", {})

    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind not in ("Deployment", "Job"):
            continue
        pod = pod_spec(doc)
        ctx = pod.get("securityContext", {})
        if ctx.get("runAsNonRoot") is not True:
            problem(f"{kind}/{name}: pod securityContext.runAsNonRoot is not true")
        if ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problem(f"{kind}/{name}: seccompProfile is not RuntimeDefault")
        for container in containers_of(doc):
            where = f"{kind}/{name}/{container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(f"{where}: readOnlyRootFilesystem is not true")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problem(f"{where}: capabilities do not drop ALL")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(part, {}):
                        problem(f"{where}: no {part}.{resource}")
            if kind == "Deployment":
                if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
                    problem(f"{where}: livenessProbe is not GET /health")
                if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
                    problem(f"{where}: readinessProbe is not GET /ready")
            refs = {r.get("configMapRef", {}).get("name") or r.get("secretRef", {}).get("name")
                    for r in container.get("envFrom", [])}
            # Each workload has its own Secret (its own database login and keys), created out
            # of band: catalog-<workload>-secrets.
            own_secret = f"{name if name.startswith('catalog-') else 'catalog-' + name}-secrets"
            for ref in refs - {None}:
                if ref not in by_kind.get("ConfigMap", {}) and ref != own_secret:
                    problem(f"{where}: envFrom names {ref}, neither rendered nor its own Secret {own_secret}")
            if own_secret not in refs:
                problem(f"{where}: does not read its own Secret {own_secret}")

    for name, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector", {})
        matches = [d for d in by_kind.get("Deployment", {}).values()
                   if selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
        if not matches:
            problem(f"Service/{name}: selector {selector} matches no Deployment's pods")

    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = hpa["spec"]["scaleTargetRef"]
        if target["name"] not in by_kind.get(target["kind"], {}):
            problem(f"HorizontalPodAutoscaler/{name}: targets {target['kind']}/{target['name']}, not rendered")
        if "replicas" in by_kind.get(target["kind"], {}).get(target["name"], {}).get("spec", {}):
            problem(f"{target['kind']}/{target['name']}: sets replicas although an HPA owns them")
    projector_hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("projector")
    partitions = int(config.get("KAFKA_TOPIC_PARTITIONS", 6))
    if projector_hpa is None:
        problem("no HorizontalPodAutoscaler for the projector")
    elif projector_hpa["spec"]["maxReplicas"] > partitions:
        problem(f"projector HPA maxReplicas {projector_hpa['spec']['maxReplicas']} > {partitions} partitions")

    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        if not any(selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()
                   for d in by_kind.get("Deployment", {}).values()):
            problem(f"PodDisruptionBudget/{name}: selector matches no Deployment's pods")

    for doc in docs:
        if doc["kind"] == "Secret":
            problem(f"Secret/{doc['metadata']['name']} is rendered: secrets stay out of the base")
    kustomization = yaml.safe_load((Path(kustomization_dir) / "kustomization.yaml").read_text())
    if "secret.example.yaml" in kustomization.get("resources", []):
        problem("kustomization.yaml lists secret.example.yaml")


# --- prometheus rules ----------------------------------------------------------------------

def rules_of(path):
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        problem(f"{path}: no `groups` list")
        return []
    out = []
    for group in data["groups"]:
        if not group.get("name") or not isinstance(group.get("rules"), list):
            problem(f"{path}: a group without a name or rules")
            continue
        out.extend(group["rules"])
    return out


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def alerts_structure(path):
    """What promtool would catch first, without PromQL parsing."""
    names = set()
    for rule in rules_of(path):
        name = rule.get("alert") or rule.get("record")
        if not name or not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
            problem(f"rule {rule}: needs `alert` (or `record`) and a non-empty `expr`")
            continue
        if rule.get("alert") and name in names:
            problem(f"{name}: defined twice")
        names.add(name)
        extra = set(rule) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
        if extra:
            problem(f"{name}: unknown fields {sorted(extra)}")
        if "for" in rule and not DURATION.match(str(rule["for"])):
            problem(f"{name}: `for: {rule['for']}` is not a duration")
        if rule["expr"].count("(") != rule["expr"].count(")"):
            problem(f"{name}: unbalanced parentheses in expr")


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def alerts_policy(path, runbook):
    anchors = {slug(line.lstrip("#")) for line in Path(runbook).read_text().splitlines()
               if line.startswith("#")}
    for rule in rules_of(path):
        name = rule.get("alert")
        if not name:
            continue
        if not rule.get("for"):
            problem(f"{name}: no `for`")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problem(f"{name}: severity label missing or not critical/warning/info")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                problem(f"{name}: no `{key}` annotation")
        url = annotations.get("runbook_url", "")
        if "#" in url and url.split("#", 1)[1] not in anchors:
            problem(f"{name}: {url}: no such section in {runbook}")


def main(argv):
    commands = {
        "render-kustomize": (render_kustomize, 1),
        "compose-policy": (compose_policy, 1),
        "k8s-policy": (k8s_policy, 2),
        "alerts-structure": (alerts_structure, 1),
        "alerts-policy": (alerts_policy, 2),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        commands[argv[1]][0](*argv[2:])
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as error:
        problem(f"{type(error).__name__}: {error}")
    for message in problems:
        print(message, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
