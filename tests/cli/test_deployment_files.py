"""docker-compose.yml, deploy/endpoints.yml and the Dockerfile agree with the CLI (Docker itself
cannot run here: these checks keep the files correct by construction)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import cli

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_command_is_a_valid_botserver_run() -> None:
    service = compose()["services"]["botserver"]
    command = [re.sub(r"\$\{[^}]*\}", "x", str(arg)) for arg in service["command"]]
    args = cli.build_parser().parse_args(command)
    assert args.command == "run" and args.enable_api and args.workers == 2
    assert args.endpoints == "/config/endpoints.yml"
    mounts = service["volumes"]
    assert "./deploy/endpoints.yml:/config/endpoints.yml:ro" in mounts


def test_every_endpoints_variable_is_set_by_compose() -> None:
    wanted = set(re.findall(r"\$\{(\w+)\}", (ROOT / "deploy" / "endpoints.yml").read_text()))
    environment = compose()["services"]["botserver"]["environment"]
    assert wanted <= set(environment), wanted - set(environment)


def test_compose_has_the_documented_services_with_health_checks() -> None:
    services = compose()["services"]
    for name in ("postgres", "redis", "rabbitmq"):
        assert "healthcheck" in services[name], name
        assert services["botserver"]["depends_on"][name]["condition"] == "service_healthy"
    endpoints = yaml.safe_load((ROOT / "deploy" / "endpoints.yml").read_text())
    assert endpoints["tracker_store"]["dialect"] == "postgresql"
    assert endpoints["lock_store"]["type"] == "redis"  # required by --workers 2
    assert endpoints["event_broker"]["type"] == "pika"


def test_dockerfile_serves_the_api_and_checks_readiness() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 5005" in text
    assert "/health/ready" in text
    assert 'ENTRYPOINT ["botserver"]' in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd
    args = cli.build_parser().parse_args(yaml.safe_load(cmd.group(1)))
    assert args.command == "run" and args.enable_api


def test_compose_passes_the_api_token_in_the_environment_not_the_command() -> None:
    """docs/security.md: a secret on the command line shows in `ps` and `docker top` to every
    user of the host. Before, compose passed `--auth-token ${BOTSERVER_AUTH_TOKEN}`."""
    service = compose()["services"]["botserver"]
    assert not {"--auth-token", "--jwt-secret"} & {str(arg) for arg in service["command"]}
    assert "BOTSERVER_AUTH_TOKEN" in service["environment"]
