"""The deployment pieces are consistent with each other and with the service's code.

* every YAML file parses; docker-compose mounts, ports and services point at things that
  exist (files of deploy/, the Dockerfile, Settings defaults);
* Prometheus: the config and every alert rule are well formed (in Python, always), and where
  ``promtool`` is on PATH (``.ci/run`` installs Debian's ``prometheus`` package) it checks the
  config and the rules and runs every alert on synthetic series (firing and quiet cases);
* every ``momentum_*`` metric used by an alert or a dashboard is exported by
  ``service.metrics.ServiceMetrics``, and every exported metric is on some dashboard;
* Grafana: valid dashboards with stable uids, every panel on the provisioned data source;
* Kubernetes: kinds, a native gRPC readiness probe and the image's probe module for liveness,
  non-root, ConfigMap keys are real settings whose values the service's settings accept;
* Dockerfile: non-root USER, HEALTHCHECK, both RUNTIME variants, the build context;
* (slow) ``deploy/install-serve.sh`` does in a fresh virtual environment exactly what the
  Dockerfile's builder stage does; the result runs ``momentum-serve`` and has no torch.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service._proto import signals_pb2
from service.config import Settings, env_var, load_settings
from service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
K8S = DEPLOY / "k8s"

GRPC_PORT = Settings.model_fields["grpc_port"].default
METRICS_PORT = Settings.model_fields["metrics_port"].default
SIGNAL_SERVICE = signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name

# The stable uid of each dashboard file: links and bookmarks depend on them.
DASHBOARD_UIDS = {
    "signals-overview.json": "momentum-signals-overview",
    "drift.json": "momentum-drift",
    "paper-trading.json": "momentum-paper-trading",
    "service-health.json": "momentum-service-health",
}

# What each dashboard is for (issue 8), as the metrics it must show.
DASHBOARD_METRICS = {
    "signals-overview.json": {
        "momentum_gross_exposure_ratio",
        "momentum_net_exposure_ratio",
        "momentum_positions",
        "momentum_portfolio_turnover_ratio",
    },
    "drift.json": {"momentum_feature_psi", "momentum_signal_psi"},
    "paper-trading.json": {
        "momentum_paper_pnl_ratio",
        "momentum_paper_drawdown_ratio",
        "momentum_paper_rolling_sharpe",
        "momentum_backtest_max_drawdown_ratio",
        "momentum_backtest_sharpe",
    },
    "service-health.json": {
        "momentum_cycles_total",
        "momentum_cycle_duration_seconds",
        "momentum_inference_duration_seconds",
        "momentum_grpc_requests_total",
        "momentum_grpc_request_duration_seconds",
        "momentum_model_info",
    },
}

# The situations issue 8 asks alerts for, by alert name.
REQUIRED_ALERTS = {
    "MomentumCycleFailed",  # cycle failed
    "MomentumNoSuccessfulCycle",  # no successful cycle since the last session close + margin
    "MomentumAssetsStale",  # stale closes: assets flagged stale
    "MomentumClosesStale",  # stale closes: newest close too old
    "MomentumFeatureDrift",  # feature PSI above 0.2
    "MomentumTurnoverHigh",  # turnover far above its backtest level
    "MomentumPaperDrawdownBeyondBacktest",  # paper drawdown beyond the backtest's worst
    "MomentumModelNotLoaded",  # model not loaded
}

_METRIC = re.compile(r"(?<![A-Za-z0-9_])momentum_[a-z_]+")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``MOMENTUM_*`` variables and an empty working directory (so no stray ``.env``)."""
    for name in list(os.environ):
        if name.startswith("MOMENTUM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed JSON / YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def metric_names(text: str) -> set[str]:
    """``momentum_*`` metric names in a query, histogram series folded into their metric."""
    return {_HISTOGRAM_SUFFIX.sub("", name) for name in _METRIC.findall(text)}


def _exported(per_ticker: bool) -> set[str]:
    """Names a query can use for the metrics of `ServiceMetrics` (counters with ``_total``)."""
    names = set()
    for family in ServiceMetrics(per_ticker=per_ticker).registry.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def _rules() -> list[dict[str, Any]]:
    groups = _yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def _compose() -> dict[str, Any]:
    return _yaml(DEPLOY / "docker-compose.yml")


_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}$")


def _compose_default(value: str) -> str:
    """``${VAR:-default}`` -> ``default``; plain values unchanged."""
    match = _DEFAULT.match(value)
    return match["default"] if match else value


def _k8s() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes object of deploy/k8s by kind."""
    objects: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _yaml_documents(path):
            objects.setdefault(doc["kind"], []).append(doc)
    return objects


WRITER = "momentum-signal-service"
READERS = "momentum-signal-readers"


def _named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in _k8s()[kind] if o["metadata"]["name"] == name]
    return found


def _deployment(name: str = WRITER) -> dict[str, Any]:
    return _named("Deployment", name)


def _container() -> dict[str, Any]:
    (container,) = _deployment()["spec"]["template"]["spec"]["containers"]
    return container


def _configmap() -> dict[str, str]:
    (configmap,) = _k8s()["ConfigMap"]
    return configmap["data"]


def _dockerfile() -> list[tuple[str, str, str]]:
    """``(stage, INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    instructions = []
    stage = ""
    for entry in logical:
        keyword, _, arguments = entry.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            alias = re.search(r"\s+AS\s+(\S+)$", arguments, re.IGNORECASE)
            stage = alias.group(1) if alias else ""
        instructions.append((stage, keyword, " ".join(arguments.split())))
    return instructions


def _stage_env(stage: str) -> dict[str, str]:
    env = {}
    for name, keyword, arguments in _dockerfile():
        if name == stage and keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(arguments))
    return env


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (Go filepath.Match plus ``**``) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` keep `path` (relative to the context) out of the build.

    As Docker does: the last matching pattern wins, ``!`` re-includes, and a pattern that
    matches a parent directory matches everything below it.
    """
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _context_copies() -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of every COPY from the build context (not ``--from``)."""
    copies = []
    for _, keyword, arguments in _dockerfile():
        if keyword != "COPY" or "--from=" in arguments:
            continue
        tokens = [t for t in shlex.split(arguments) if not t.startswith("--")]
        copies.append((tokens[:-1], tokens[-1]))
    return copies


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------

YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])


def test_the_deploy_tree_has_its_yaml_files():
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES}
    assert {
        "docker-compose.yml",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/dashboards.yml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/configmap.yaml",
        "k8s/pvc.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_to_mappings(path):
    documents = _yaml_documents(path)
    assert documents, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in documents)


# --------------------------------------------------------------------------------------------
# docker compose
# --------------------------------------------------------------------------------------------


def test_compose_services_and_the_postgres_profile():
    services = _compose()["services"]
    assert set(services) == {"signal-service", "postgres", "prometheus", "grafana"}
    # the stack runs without PostgreSQL; the profile adds it
    assert services["postgres"]["profiles"] == ["postgres"]
    assert all("profiles" not in services[name] for name in services if name != "postgres")
    dependency = services["signal-service"]["depends_on"]["postgres"]
    assert dependency == {"condition": "service_healthy", "required": False}
    assert services["postgres"]["image"].startswith("postgres:16")


def test_compose_builds_the_repository_dockerfile():
    build = _compose()["services"]["signal-service"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    assert _compose_default(build["args"]["RUNTIME"]) == "cpu"


def test_compose_bind_mounts_exist_and_volumes_are_declared():
    compose = _compose()
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            assert isinstance(mount, dict), f"{name}: use the long volume syntax"
            if mount["type"] == "volume":
                used.add(mount["source"])
                continue
            assert mount["type"] == "bind"
            source = (DEPLOY / _compose_default(mount["source"])).resolve()
            if mount["target"] == "/models":
                # the model registry is data, not a file of the repository: its default is
                # where momentum-train publishes by default (MOMENTUM_REGISTRY_DIR's default)
                assert source == ROOT / Settings.model_fields["registry_dir"].default
                assert mount["read_only"] is True
            else:
                assert source.exists(), f"{name}: bind mount {mount['source']} does not exist"
                assert str(source).startswith(str(DEPLOY)), f"{name}: mounts outside deploy/"
    assert used == declared


def test_compose_signal_service_ports_and_settings():
    service = _compose()["services"]["signal-service"]
    published = {int(p.split(":")[1]) for p in service["ports"]}
    assert published == {GRPC_PORT, METRICS_PORT}
    # the variables it sets are real settings (a typo would be silently ignored otherwise)
    fields = {env_var(name) for name in Settings.model_fields}
    assert set(service["environment"]) <= fields
    volumes = {m["target"] for m in service["volumes"]}
    assert {"/models", "/data"} <= volumes


def test_the_postgres_env_file_points_the_service_at_the_profile_database(clean_env):
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "postgres.env").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert env["COMPOSE_PROFILES"] == "postgres"
    postgres = _compose()["services"]["postgres"]["environment"]
    url = load_settings(database_url=env["MOMENTUM_DATABASE_URL"], _env_file=None).database_url
    assert url == (
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:"
        f"{_compose_default(postgres['POSTGRES_PASSWORD'])}@postgres:5432/"
        f"{postgres['POSTGRES_DB']}"
    )


def test_prometheus_scrapes_the_compose_service_and_loads_the_rules():
    compose = _compose()
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "momentum-signal-service"]
    (targets,) = [c["targets"] for c in job["static_configs"]]
    assert targets == [f"signal-service:{METRICS_PORT}"]
    assert job["metrics_path"] == "/metrics"
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    # the compose service mounts this directory where its command line reads the config
    prometheus = compose["services"]["prometheus"]
    (mount,) = [m for m in prometheus["volumes"] if m["type"] == "bind"]
    assert (DEPLOY / mount["source"]).resolve() == DEPLOY / "prometheus"
    (flag,) = [f for f in prometheus["command"] if f.startswith("--config.file=")]
    assert flag == f"--config.file={mount['target']}/prometheus.yml"


def test_grafana_provisioning_matches_the_compose_mounts():
    grafana = _compose()["services"]["grafana"]
    mounts = {m["target"]: m for m in grafana["volumes"] if m["type"] == "bind"}
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]["source"]).resolve() == PROVISIONING
    (provider,) = _yaml(PROVISIONING / "dashboards" / "dashboards.yml")["providers"]
    dashboards_mount = mounts[provider["options"]["path"]]
    assert (DEPLOY / dashboards_mount["source"]).resolve() == DASHBOARDS
    (datasource,) = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"  # the compose service


# --------------------------------------------------------------------------------------------
# alert rules and metric names
# --------------------------------------------------------------------------------------------


def test_every_alert_rule_is_complete():
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules:
        name = rule["alert"]
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smhd]", str(rule["for"])), f"{name}: `for` {rule['for']!r}"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_drift_alerts_use_the_psi_alert_level():
    exprs = {rule["alert"]: rule["expr"] for rule in _rules()}
    for alert, name in [("MomentumFeatureDrift", "feature"), ("MomentumSignalDrift", "signal")]:
        psi = f"momentum_{name}_psi"
        assert re.fullmatch(
            rf"{psi}\s*>\s*0\.2\s+unless\s+{psi}\s*<=\s*{psi}_baseline", exprs[alert]
        ), exprs[alert]


def test_metric_names_are_read_as_metrics():
    query = "histogram_quantile(0.9, rate(momentum_cycle_duration_seconds_bucket[5m])) + x"
    assert metric_names(query) == {"momentum_cycle_duration_seconds"}
    assert metric_names("increase(momentum_cycles_total[1h])") == {"momentum_cycles_total"}
    # a dashboard uid or a longer identifier is not a metric
    assert metric_names("uid momentum-drift, deep_momentum_x") == set()


def test_the_name_check_catches_a_misspelt_metric():
    allowed = _exported(per_ticker=True)
    assert "momentum_cycles_total" in allowed and "momentum_model_loaded" in allowed
    assert metric_names("increase(momentum_cycle_total[1h])") - allowed == {"momentum_cycle_total"}


def test_alerts_use_only_exported_metrics():
    allowed = _exported(per_ticker=True)
    for rule in _rules():
        used = set()
        for text in [rule["expr"], *rule["annotations"].values()]:
            used |= metric_names(text)
        assert used, f"{rule['alert']} uses no momentum_* metric"
        assert used <= allowed, f"{rule['alert']}: unknown metrics {sorted(used - allowed)}"


def test_dashboards_use_only_exported_metrics():
    allowed = _exported(per_ticker=True)
    for name, board in _dashboards().items():
        used = set().union(*(metric_names(s) for s in _strings(board)))
        assert used <= allowed, f"{name}: unknown metrics {sorted(used - allowed)}"


def test_every_exported_metric_is_on_a_dashboard():
    shown = set()
    for board in _dashboards().values():
        for panel in board["panels"]:
            for target in panel["targets"]:
                shown |= metric_names(target["expr"])
    missing = _exported(per_ticker=False) - shown
    assert not missing, f"metrics on no dashboard: {sorted(missing)}"


# --------------------------------------------------------------------------------------------
# Grafana dashboards
# --------------------------------------------------------------------------------------------


def _provisioned_uid() -> str:
    (datasource,) = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    return datasource["uid"]


def test_dashboards_have_their_stable_uids():
    boards = _dashboards()
    assert set(boards) == set(DASHBOARD_UIDS)
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["uid"] == DASHBOARD_UIDS[name]
        assert len(board["uid"]) <= 40  # Grafana's limit
        assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
        assert board["title"].strip()


@pytest.mark.parametrize("name", sorted(DASHBOARD_UIDS))
def test_every_panel_queries_the_provisioned_datasource(name):
    board = _dashboards()[name]
    uid = _provisioned_uid()
    panels = board["panels"]
    assert panels
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, title
        assert panel["targets"], f"{title} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target.get("datasource", panel["datasource"])["uid"] == uid, title
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), title
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid, variable["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARD_UIDS))
def test_panels_fit_the_grid_without_overlapping(name):
    boxes = [p["gridPos"] for p in _dashboards()[name]["panels"]]
    for box in boxes:
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{name}: panels at {a} and {b} overlap"


@pytest.mark.parametrize("name", sorted(DASHBOARD_METRICS))
def test_each_dashboard_shows_what_it_is_for(name):
    board = _dashboards()[name]
    used = set().union(*(metric_names(t["expr"]) for p in board["panels"] for t in p["targets"]))
    assert DASHBOARD_METRICS[name] <= used, sorted(DASHBOARD_METRICS[name] - used)


def test_drift_panels_mark_the_warn_and_alert_levels():
    board = _dashboards()["drift.json"]
    psi_panels = [p for p in board["panels"] if any("_psi" in t["expr"] for t in p["targets"])]
    assert len(psi_panels) >= 2
    for panel in psi_panels:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, 0.1, 0.2], panel["title"]
    lines = [
        p
        for p in psi_panels
        if p["type"] == "timeseries"
        and p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    ]
    assert {t["expr"].split("{")[0] for p in lines for t in p["targets"]} == {
        "momentum_feature_psi",
        "momentum_signal_psi",
        "momentum_signal_psi_baseline",  # drawn with the levels: the alert needs all three
    }


def test_execution_provider_is_shown():
    board = _dashboards()["service-health.json"]
    tables = [
        p
        for p in board["panels"]
        if any("momentum_model_info" in t["expr"] for t in p["targets"]) and p["type"] == "table"
    ]
    assert tables
    order = tables[0]["transformations"][0]["options"]["indexByName"]
    assert "execution_provider" in order


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------


def test_k8s_kinds():
    objects = _k8s()
    assert set(objects) == {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    assert {d["metadata"]["name"] for d in objects["Deployment"]} == {WRITER, READERS}
    claims = {pvc["metadata"]["name"] for pvc in objects["PersistentVolumeClaim"]}
    assert claims == {"momentum-models", "momentum-data"}


def test_one_scheduler_replica_replaced_by_recreate():
    spec = _deployment()["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    container = _container()
    assert [*container["command"], *container["args"]] == ["momentum-serve", "run"]


def test_probes_use_grpc_health_on_the_grpc_port():
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    assert int(_configmap()[env_var("grpc_port")]) == ports["grpc"]
    # ready = the native gRPC probe finds the signal service SERVING (a model is loaded)
    readiness = container["readinessProbe"]
    assert set(readiness) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
    assert readiness["grpc"] == {"port": ports["grpc"], "service": SIGNAL_SERVICE}
    # alive = the health service answers at all (NOT_SERVING while waiting for a model is
    # alive): the image's probe module, which dials MOMENTUM_GRPC_PORT from the ConfigMap
    for kind in ("startupProbe", "livenessProbe"):
        probe = container[kind]
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"exec"}, kind
        command = probe["exec"]["command"]
        assert command[1:] == ["-m", "service.healthcheck", "--liveness"], kind
        assert command[0] == f"{_runtime_venv()}/bin/python", kind
        assert probe["timeoutSeconds"] >= 5, kind


def _runtime_venv() -> str:
    """Where the runtime image holds the builder's virtual environment."""
    (copy,) = [a for s, kw, a in _dockerfile() if s == "runtime" and kw == "COPY"]
    assert copy.startswith("--from=builder ")
    return copy.split()[-1]


def _dockerfile_uid() -> int:
    (user,) = [args for stage, kw, args in _dockerfile() if kw == "USER" and stage == "runtime"]
    return int(user.split(":")[0])


def test_the_pod_runs_as_the_image_non_root_user():
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _dockerfile_uid() != 0
    container = _container()["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["runAsNonRoot"] is True
    assert container["capabilities"]["drop"] == ["ALL"]


def test_volumes_claims_and_settings_agree():
    pod = _deployment()["spec"]["template"]["spec"]
    claims = {pvc["metadata"]["name"] for pvc in _k8s()["PersistentVolumeClaim"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    config = _configmap()
    for setting, claim in (("registry_dir", "momentum-models"), ("data_dir", "momentum-data")):
        mount = mounts[config[env_var(setting)]]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
        assert claim in claims
    assert mounts[config[env_var("registry_dir")]]["readOnly"] is True
    # the read-only root filesystem needs a writable /tmp (numba's cache, NUMBA_CACHE_DIR)
    assert _container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert _stage_env("runtime")["NUMBA_CACHE_DIR"].startswith("/tmp/")


def test_prometheus_annotations_and_the_service_reach_the_ports():
    template = _deployment()["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == int(_configmap()[env_var("metrics_port")])
    assert annotations["prometheus.io/path"] == "/metrics"
    service = _named("Service", WRITER)
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    names = {p["name"] for p in _container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == names
    assert {p["port"] for p in service["spec"]["ports"]} == {GRPC_PORT, METRICS_PORT}


def test_read_replicas_run_without_a_scheduler_behind_their_own_service():
    readers = _deployment(READERS)
    spec = readers["spec"]
    assert spec["replicas"] >= 2
    (container,) = spec["template"]["spec"]["containers"]
    assert [*container["command"], *container["args"]] == ["momentum-serve", "run", "--reader"]
    assert container["readinessProbe"]["grpc"]["service"] == SIGNAL_SERVICE
    # they need the PostgreSQL URL: the Secret is not optional for them
    (secret,) = [s["secretRef"] for s in container["envFrom"] if "secretRef" in s]
    assert secret.get("optional") is not True
    # no data volume: they never write
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/models", "/tmp"}
    service = _named("Service", READERS)
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_deployment_reads_the_configmap_and_requires_the_secret():
    (configmap,) = _k8s()["ConfigMap"]
    sources = _container()["envFrom"]
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources
    (secret,) = [s["secretRef"] for s in sources if "secretRef" in s]
    # the token lives there, and gRPC on 0.0.0.0 refuses to serve without one
    assert secret.get("optional", False) is False
    assert _configmap()[env_var("grpc_host")] == "0.0.0.0"


def test_compose_requires_a_grpc_token():
    environment = _compose()["services"]["signal-service"]["environment"]
    assert re.fullmatch(r"\$\{MOMENTUM_GRPC_TOKEN:\?[^}]+\}", environment["MOMENTUM_GRPC_TOKEN"])


def test_configmap_keys_are_settings_and_the_service_accepts_the_values(clean_env, monkeypatch):
    data = _configmap()
    fields = {env_var(name): name for name in Settings.model_fields}
    unknown = set(data) - set(fields)
    assert not unknown, f"not settings: {sorted(unknown)}"
    # secrets stay out of the ConfigMap
    assert not {env_var("database_url"), env_var("grpc_token")} & set(data)
    for key, value in data.items():
        assert isinstance(value, str), f"{key}: ConfigMap values must be strings"
        monkeypatch.setenv(key, value)
    settings = load_settings(_env_file=None)
    assert settings.grpc_host == "0.0.0.0"
    assert str(settings.registry_dir) == "/models" and str(settings.data_dir) == "/data"
    assert (settings.grpc_port, settings.metrics_port) == (GRPC_PORT, METRICS_PORT)


# --------------------------------------------------------------------------------------------
# Dockerfile and build context
# --------------------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck():
    instructions = _dockerfile()
    stages = [stage for stage, keyword, _ in instructions if keyword == "FROM"]
    assert stages[-1] == "runtime", "the runtime stage must be the last (default target)"
    users = [args for stage, kw, args in instructions if kw == "USER"]
    assert len(users) == 1 and _dockerfile_uid() != 0 and not users[0].startswith("root")
    (healthcheck,) = [args for stage, kw, args in instructions if kw == "HEALTHCHECK"]
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[1:3] == ["-m", "service.healthcheck"]
    (cmd,) = [args for stage, kw, args in instructions if kw == "CMD"]
    assert json.loads(cmd) == ["momentum-serve", "run"]


def test_dockerfile_has_both_runtimes_and_their_extras():
    instructions = _dockerfile()
    args = {
        a.split("=")[0]: a.split("=", 1)[1]
        for s, kw, a in instructions
        if kw == "ARG" and not s and "=" in a
    }
    assert args["RUNTIME"] == "cpu"
    froms = {stage: args_ for stage, kw, args_ in instructions if kw == "FROM"}
    assert froms["base-cpu"].startswith("python:")
    assert froms["base-cuda"].startswith("${CUDA_IMAGE}")
    assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu[\d.]+", args["CUDA_IMAGE"])
    assert froms["base"] == "base-${RUNTIME} AS base"
    assert _stage_env("base-cpu")["MOMENTUM_SERVE_EXTRA"] == "serve-cpu"
    assert _stage_env("base-cuda")["MOMENTUM_SERVE_EXTRA"] == "serve"
    # the extras exist; the CPU one has plain onnxruntime only; neither pulls torch
    with (ROOT / "pyproject.toml").open("rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    assert any(req.startswith("onnxruntime-gpu") for req in extras["serve"])
    assert not any(req.startswith("onnxruntime-gpu") for req in extras["serve-cpu"])
    for extra in ("serve", "serve-cpu", "serve-core"):
        assert not any(req.startswith("torch") for req in extras[extra]), extra


def test_dockerfile_environment_volumes_and_ports():
    instructions = _dockerfile()
    env = _stage_env("runtime")
    assert env[env_var("registry_dir")] == "/models"
    assert env[env_var("data_dir")] == "/data"
    assert env[env_var("grpc_host")] == "0.0.0.0"
    (volume,) = [json.loads(a) for s, kw, a in instructions if kw == "VOLUME"]
    assert volume == ["/models", "/data"]
    (expose,) = [a for s, kw, a in instructions if kw == "EXPOSE"]
    assert {int(p) for p in expose.split()} == {GRPC_PORT, METRICS_PORT}
    # the image itself refuses torch at build time
    checks = " ".join(a for s, kw, a in instructions if kw == "RUN" and s == "runtime")
    assert "find_spec('torch')" in checks


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy():
    patterns = _dockerignore_patterns()
    for sources, _ in _context_copies():
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not dockerignored(source, patterns), f"{source} is excluded by .dockerignore"
    # what the service needs at run time, inside the copied packages
    for kept in ("momentum/data/sp500.csv.gz", "service/_proto/signals_pb2.py"):
        assert not dockerignored(kept, patterns), kept
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "training/cli.py",
        "tests/deploy/test_deploy.py",
        "runs/results/report.md",
        "models/slp/production",
        "service/__pycache__/cli.cpython-311.pyc",
        "var/momentum.db",
    ):
        assert dockerignored(left_out, patterns), left_out


def test_the_dockerignore_matcher_follows_docker_rules():
    patterns = ["*", "!src/", "**/__pycache__", "src/secret.txt"]
    assert dockerignored("README.md", patterns)
    assert not dockerignored("src/a/b.py", patterns)
    assert dockerignored("src/a/__pycache__/b.pyc", patterns)
    assert dockerignored("src/secret.txt", patterns)


# --------------------------------------------------------------------------------------------
# promtool (where installed: .ci/run installs Debian's `prometheus` package)
# --------------------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")

# Labels of the scraped target in the synthetic series.
TARGET = {"job": "momentum", "instance": "signals:9108"}
DAY = 86400  # seconds; 1970-01-01 (time 0 of a promtool test) is a Thursday


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in {**labels, **TARGET}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _fires(alert: str, at: str, severity: str, **labels: str) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": {**TARGET, **labels, "severity": severity}}],
    }


def _quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def _alert_cases() -> list[dict[str, Any]]:
    """promtool rule tests: synthetic series and when each alert must (not) fire.

    ``every`` (not a promtool key) is the rule evaluation interval the case needs: 1m unless
    given; cases over days use a coarser one to keep promtool fast.
    """
    gpm = "/momentum.v1.SignalService/GetPositions"
    return [
        # a failed cycle at minute 3 fires within `for: 1m`, resolves once out of the hour;
        # succeeded cycles never fire it
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_cycles_total", "0 0 0 1x100", status="failed"),
                _series("momentum_cycles_total", "0+1x103", status="succeeded"),
            ],
            "alert_rule_test": [
                _quiet("MomentumCycleFailed", "2m"),
                _fires("MomentumCycleFailed", "6m", "critical", status="failed"),
                _quiet("MomentumCycleFailed", "70m"),
            ],
        },
        # positions as of Thursday 1970-01-01: fine on Friday; on Saturday (UTC) Friday's
        # session has no positions
        {
            "every": "5m",
            "interval": "5m",
            "input_series": [_series("momentum_last_cycle_as_of_timestamp_seconds", "0x2000")],
            "alert_rule_test": [
                _quiet("MomentumNoSuccessfulCycle", "1d12h"),
                _quiet("MomentumNoSuccessfulCycle", "1d23h55m"),
                _fires("MomentumNoSuccessfulCycle", "2d30m", "warning"),
            ],
        },
        # positions as of Friday: quiet over the weekend and Monday until Monday's session
        # is due (Tuesday 00:00 UTC); newest close Friday: the same for the closes
        {
            "every": "5m",
            "interval": "5m",
            "input_series": [
                _series("momentum_last_cycle_as_of_timestamp_seconds", f"{DAY}x2000"),
                _series("momentum_newest_close_timestamp_seconds", f"{DAY}x2000", universe="sp500"),
            ],
            "alert_rule_test": [
                _quiet("MomentumNoSuccessfulCycle", "2d12h"),
                _quiet("MomentumNoSuccessfulCycle", "3d12h"),
                _quiet("MomentumNoSuccessfulCycle", "4d23h55m"),
                _fires("MomentumNoSuccessfulCycle", "5d30m", "warning"),
                _quiet("MomentumClosesStale", "4d12h"),
                _fires("MomentumClosesStale", "5d30m", "warning", universe="sp500"),
            ],
        },
        # Friday's closes arrive at minute 10, the positions only at minute 200
        {
            "interval": "1m",
            "input_series": [
                _series(
                    "momentum_newest_close_timestamp_seconds", f"0x9 {DAY}x300", universe="sp500"
                ),
                _series("momentum_last_cycle_as_of_timestamp_seconds", f"0x200 {DAY}x110"),
            ],
            "alert_rule_test": [
                _quiet("MomentumPositionsBehindCloses", "60m"),
                _fires("MomentumPositionsBehindCloses", "105m", "critical"),
                _quiet("MomentumPositionsBehindCloses", "205m"),
            ],
        },
        {
            "interval": "1m",
            "input_series": [_series("momentum_assets_stale", "0x5 3x30")],
            "alert_rule_test": [
                _quiet("MomentumAssetsStale", "3m"),
                _quiet("MomentumAssetsStale", "15m"),
                _fires("MomentumAssetsStale", "25m", "warning"),
            ],
        },
        # PSI 0.15 is above the warn level only: no alert; 0.25 alerts after an hour (no
        # baseline: a manifest without one, NaN)
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_feature_psi", "0.25x100", feature="macd_8_24"),
                _series("momentum_feature_psi", "0.15x100", feature="norm_ret_1d"),
                _series(
                    "momentum_feature_psi_baseline", " ".join(["NaN"] * 101), feature="macd_8_24"
                ),
                _series("momentum_signal_psi", "0.05x30 0.3x100"),
                _series("momentum_signal_psi_baseline", " ".join(["NaN"] * 131)),
            ],
            "alert_rule_test": [
                _quiet("MomentumFeatureDrift", "30m"),
                _fires("MomentumFeatureDrift", "70m", "warning", feature="macd_8_24"),
                _quiet("MomentumSignalDrift", "60m"),
                _fires("MomentumSignalDrift", "95m", "warning"),
            ],
        },
        # above 0.2 but within the baseline (what the reference period's own windows score):
        # quiet; beyond the baseline: fires
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_feature_psi", "0.75x100", feature="macd_16_48"),
                _series("momentum_feature_psi_baseline", "2.16x100", feature="macd_16_48"),
                _series("momentum_feature_psi", "0.9x100", feature="norm_ret_21d"),
                _series("momentum_feature_psi_baseline", "0.36x100", feature="norm_ret_21d"),
                _series("momentum_signal_psi", "0.5x30 1.5x100"),
                _series("momentum_signal_psi_baseline", "0.8x130"),
            ],
            "alert_rule_test": [
                _fires("MomentumFeatureDrift", "70m", "warning", feature="norm_ret_21d"),
                _quiet("MomentumSignalDrift", "60m"),
                _fires("MomentumSignalDrift", "95m", "warning"),
            ],
        },
        # parity at rounding level is quiet; a difference above 1e-9 (or +Inf) pages
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_feature_parity_max_abs", "0x10 1e-12x10 2e-6x10 0x10"),
            ],
            "alert_rule_test": [
                _quiet("MomentumFeatureParity", "5m"),
                _quiet("MomentumFeatureParity", "15m"),
                _fires("MomentumFeatureParity", "25m", "critical"),
                _quiet("MomentumFeatureParity", "35m"),
            ],
        },
        # the first set's trade-in (0.9 for a long weekend) then the backtest's pace: never
        {
            "every": "30m",
            "interval": "5m",
            "input_series": [
                _series("momentum_portfolio_turnover_ratio", "0.9x863 0.06x3000"),
                _series("momentum_backtest_turnover_ratio", "0.05x3900"),
            ],
            "alert_rule_test": [
                _quiet("MomentumTurnoverHigh", "2d"),
                _quiet("MomentumTurnoverHigh", "12d"),
            ],
        },
        # four times the backtest's turnover: fires once 10 days of history exist
        {
            "every": "30m",
            "interval": "5m",
            "input_series": [
                _series("momentum_portfolio_turnover_ratio", "0.9x863 0.2x3000"),
                _series("momentum_backtest_turnover_ratio", "0.05x3900"),
            ],
            "alert_rule_test": [
                _quiet("MomentumTurnoverHigh", "9d"),
                _fires("MomentumTurnoverHigh", "11d", "warning"),
            ],
        },
        # drawdown 10% within the backtest's 15%, then 20% beyond it from minute 61
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_paper_drawdown_ratio", "0.1x60 0.2x120"),
                _series("momentum_backtest_max_drawdown_ratio", "0.15x180"),
            ],
            "alert_rule_test": [
                _quiet("MomentumPaperDrawdownBeyondBacktest", "100m"),
                _fires("MomentumPaperDrawdownBeyondBacktest", "125m", "critical"),
            ],
        },
        {
            "interval": "1m",
            "input_series": [_series("momentum_model_production_refused", "0x10 1x20")],
            "alert_rule_test": [
                _quiet("MomentumProductionModelRefused", "13m"),
                _fires("MomentumProductionModelRefused", "20m", "warning"),
            ],
        },
        {
            "interval": "1m",
            "input_series": [_series("momentum_insecure_serving", "0x10 1x10")],
            "alert_rule_test": [
                _quiet("MomentumInsecureServing", "5m"),
                _fires("MomentumInsecureServing", "15m", "warning"),
            ],
        },
        {
            "interval": "1m",
            "input_series": [_series("momentum_model_loaded", "1x10 0x30")],
            "alert_rule_test": [
                _quiet("MomentumModelNotLoaded", "12m"),
                _fires("MomentumModelNotLoaded", "18m", "critical"),
                _quiet("MomentumServiceDown", "30m"),
            ],
        },
        # the last scrape at minute 10; absent after the 5-minute lookback, firing 5 min later
        {
            "interval": "1m",
            "input_series": [_series("momentum_model_loaded", "1x10")],
            "alert_rule_test": [
                _quiet("MomentumServiceDown", "5m"),
                {
                    "eval_time": "30m",
                    "alertname": "MomentumServiceDown",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
            ],
        },
        # 10 INTERNAL per 100 OK (9%) fires; the same share of INVALID_ARGUMENT does not
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_grpc_requests_total", "0+100x30", method=gpm, code="OK"),
                _series("momentum_grpc_requests_total", "0+10x30", method=gpm, code="INTERNAL"),
            ],
            "alert_rule_test": [
                _quiet("MomentumGrpcServerErrors", "5m"),
                _fires("MomentumGrpcServerErrors", "20m", "warning"),
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_grpc_requests_total", "0+100x30", method=gpm, code="OK"),
                _series(
                    "momentum_grpc_requests_total", "0+10x30", method=gpm, code="INVALID_ARGUMENT"
                ),
            ],
            "alert_rule_test": [_quiet("MomentumGrpcServerErrors", "20m")],
        },
        # a slow consumer dropped at minute 10: fires while the drop is in the last 15
        # minutes, quiet before and after; open streams alone never fire
        {
            "interval": "1m",
            "input_series": [
                _series("momentum_grpc_streams_dropped_total", "0x10 1x40", reason="backlog"),
                _series("momentum_grpc_streams_dropped_total", "0x50", reason="server_limit"),
                _series("momentum_grpc_streams", "500x50"),
            ],
            "alert_rule_test": [
                _quiet("MomentumStreamsDropped", "5m"),
                _fires("MomentumStreamsDropped", "15m", "warning", reason="backlog"),
                _quiet("MomentumStreamsDropped", "40m"),
            ],
        },
    ]


def test_every_alert_has_a_firing_and_a_quiet_case():
    fired, quiet = set(), set()
    for case in _alert_cases():
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert fired == names
    assert quiet == names


if PROMTOOL is not None:

    def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300
        )

    def test_promtool_checks_the_config_and_the_rules():
        done = _promtool("check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
        assert done.returncode == 0, done.stdout + done.stderr
        done = _promtool("check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(_rules())} rules found" in done.stdout

    def test_promtool_runs_every_alert_on_synthetic_series(tmp_path):
        # annotations are templates checked by `check rules`; without them the expected
        # alerts are their labels alone (promtool compares annotations exactly)
        rules = _yaml(DEPLOY / "prometheus" / "alerts.yml")
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations")
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
        by_interval: dict[str, list[dict[str, Any]]] = {}
        for case in _alert_cases():
            by_interval.setdefault(case.pop("every", "1m"), []).append(case)
        for every, cases in by_interval.items():
            tests = {"rule_files": ["alerts.yml"], "evaluation_interval": every, "tests": cases}
            path = tmp_path / f"alerts_test_{every}.yml"
            path.write_text(yaml.safe_dump(tests), encoding="utf-8")
            done = _promtool("test", "rules", path.name, cwd=tmp_path)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "SUCCESS" in done.stdout


# --------------------------------------------------------------------------------------------
# the install steps of the image, in a fresh virtual environment
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_install_script_builds_a_torch_free_service_environment(tmp_path):
    """The builder stage's COPY and RUN steps, replayed here (about a minute with a warm
    pip cache; several minutes when every wheel is downloaded)."""
    instructions = _dockerfile()
    (workdir,) = [a for s, kw, a in instructions if s == "builder" and kw == "WORKDIR"]
    (run,) = [a for s, kw, a in instructions if s == "builder" and kw == "RUN"]
    command = shlex.split(run)
    # through bash: the build does not depend on the script's executable bit
    assert command[:2] == ["bash", "./deploy/install-serve.sh"]
    extra_variable = re.fullmatch(r"\$\{(\w+)\}", command[2])
    assert extra_variable, command
    extra = _stage_env("base-cpu")[extra_variable.group(1)]
    assert extra == "serve-cpu"

    # the build context as the builder stage sees it under WORKDIR
    source = tmp_path / workdir.lstrip("/")
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for sources, destination in _context_copies():
        for item in sources:
            # COPY a b c ./  puts each under the directory; COPY dir ./dir names the target
            target = source / destination
            if destination.endswith("/"):
                target = target / Path(item).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / item).is_dir():
                shutil.copytree(ROOT / item, target, ignore=ignore)
            else:
                shutil.copy2(ROOT / item, target)
    assert not (source / "training").exists()

    venv = tmp_path / "venv"
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        [*command[:2], extra, str(venv)],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # the environment must not depend on the source tree it was built from
    shutil.rmtree(source)

    python = venv / "bin" / "python"
    cli = subprocess.run(
        [venv / "bin" / "momentum-serve", "--help"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "run" in cli.stdout
    torch = subprocess.run([python, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert torch.returncode != 0
    assert "No module named 'torch'" in torch.stderr
    runtimes = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], env=env, capture_output=True, text=True
    )
    installed = {p["name"].lower() for p in json.loads(runtimes.stdout)}
    assert "onnxruntime" in installed and "onnxruntime-gpu" not in installed
    # the HEALTHCHECK command works in it: nothing listens, so it reports unhealthy (1)
    probe = subprocess.run(
        [python, "-m", "service.healthcheck", "--port", str(_free_port()), "--timeout", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 1, probe.stdout + probe.stderr
    assert "UNAVAILABLE" in probe.stdout
