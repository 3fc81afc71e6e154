"""`botserver run`: checks before starting, a real server process, probes, logs, shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.tcp_proxy import free_port
from tests.cli.botserver_process import REPO, ServerProcess, botserver_command
from tests.fake_http import silent_server
from tests.loop_lag import paced
from tests.models.conftest import s3_at
from tests.tls_certificates import self_signed


# -- refused before anything starts (in process: nothing is served) ---------------------------
def test_bad_yaml_in_endpoints_names_file_and_line(run_cli, tmp_path: Path) -> None:
    (tmp_path / "endpoints.yml").write_text("tracker_store:\n  type: sql\n  url: [oops\n")
    result = run_cli("run", "--enable-api", cwd=tmp_path)
    assert result.code == 1
    assert "endpoints.yml:4" in result.err
    assert "Traceback" not in result.err


def test_endpoints_section_that_is_not_a_mapping(run_cli, tmp_path: Path) -> None:
    (tmp_path / "endpoints.yml").write_text("tracker_store: sql\n")
    result = run_cli("run", cwd=tmp_path)
    assert result.code == 1
    assert "section 'tracker_store' must be a mapping" in result.err


@pytest.mark.parametrize(
    ("section", "settings", "says"),
    [
        ("tracker_store", "type: sql\n  cache_events: lots", "a setting has the wrong type"),
        (
            "tracker_store",
            "type: redis\n  port: six",
            "Redis port must be a whole number, got 'six'",
        ),
        ("lock_store", "type: redis\n  lock_lifetime: long", "a setting has the wrong type"),
        ("lock_store", "type: in_memory\n  wait_timeout: [1]", "a setting has the wrong type"),
        (
            "event_broker",
            "type: pika\n  queues: 5",
            "'queues' must be a list of queue names, not 5",
        ),
        (
            "event_broker",
            "type: sql\n  retry_delay_in_seconds: soon",
            "a setting has the wrong type",
        ),
        # An integer no float holds: OverflowError, a traceback, before.
        pytest.param(
            "lock_store",
            f"type: in_memory\n  wait_timeout: 1{'0' * 400}",
            "a setting has the wrong type",
            id="lock-huge-int",
        ),
        pytest.param(
            "event_broker",
            f"type: sql\n  retry_delay_in_seconds: 1{'0' * 400}",
            "a setting has the wrong type",
            id="broker-huge-int",
        ),
    ],
)
def test_an_endpoints_setting_of_the_wrong_type_is_a_clear_error(
    run_cli, tmp_path: Path, section: str, settings: str, says: str
) -> None:
    """Before, the server stopped with a traceback (ValueError, TypeError) at start-up."""
    (tmp_path / "endpoints.yml").write_text(f"{section}:\n  {settings}\n")
    # --enable-api: a model could come (else the missing one is said first, as Rasa says it).
    result = run_cli("run", "--enable-api", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    assert f"section '{section}': {says}" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("dialect", "name", "value", "least"),
    [
        ("postgresql", "SQL_POOL_SIZE", "abc", 1),
        ("postgresql", "SQL_MAX_OVERFLOW", "-3", 0),
        ("mysql", "SQL_POOL_SIZE", "0", 1),
        ("mysql", "SQL_MAX_OVERFLOW", "many", 0),
    ],
)
def test_a_wrong_sql_pool_size_is_blamed_on_its_environment_variable(
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    dialect: str,
    name: str,
    value: str,
    least: int,
) -> None:
    """Before, "abc" was "a setting has the wrong type: invalid literal for int()", as if
    endpoints.yml were wrong, and -3 or 0 were taken without a word."""
    monkeypatch.setenv(name, value)
    store = f"type: sql\n  dialect: {dialect}\n  url: 127.0.0.1\n  db: test"
    (tmp_path / "endpoints.yml").write_text(f"tracker_store:\n  {store}\n")
    result = run_cli("run", "--enable-api", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    said = f"{name} must be a whole number of connections, {least} or more, not {value!r}"
    assert said in result.err
    assert "wrong type" not in result.err


@pytest.mark.parametrize(
    ("command", "section", "settings"),
    [
        ("run", "tracker_store", "type: redis\n  port: six"),
        ("run", "lock_store", "type: redis\n  lock_lifetime: long"),
        ("run", "event_broker", "type: pika\n  queues: 5"),
        ("run", "action_endpoint", "url: http://localhost:5055/webhook\n  timeout: soon"),
        ("run", "nlg", "url: http://localhost:5056/nlg\n  timeout: soon"),
        ("prune", "tracker_store", "type: sql\n  cache_events: lots"),
        ("prune", "lock_store", "type: redis\n  lock_lifetime: long"),
    ],
)
def test_a_wrong_setting_names_the_endpoints_file_given_and_its_section(
    run_cli, tmp_path: Path, command: str, section: str, settings: str
) -> None:
    """Before, the error said `endpoints.yml` whatever file --endpoints named, and an
    action_endpoint or nlg setting named neither the file nor the section."""
    (tmp_path / "prod-endpoints.yml").write_text(f"{section}:\n  {settings}\n")
    # prune reads a store that is there (without a tracker_store section, the working
    # directory's botserver.db, which it refuses to make: an empty file is an empty database)
    (tmp_path / "botserver.db").touch()
    # (run: --enable-api, a model could come, as above)
    run_flags = ["--enable-api", "-p", str(free_port())]
    extra = run_flags if command == "run" else ["--older-than-days", "30"]
    result = run_cli(command, "--endpoints", "prod-endpoints.yml", *extra, cwd=tmp_path)
    assert result.code == 1
    assert f"error: prod-endpoints.yml, section '{section}': " in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("url", ["http://bot:pa55@localhost:99999", "http://[::1"])
def test_a_remote_nlu_url_that_is_no_url_is_a_clear_error(
    run_cli, tmp_path: Path, url: str
) -> None:
    """Before, a traceback (ValueError: Port out of range) stopped the start."""
    (tmp_path / "endpoints.yml").write_text(f'nlu:\n  url: "{url}"\n')
    result = run_cli("run", "--enable-api", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "is not a URL" in result.err
    assert "pa55" not in result.err


def test_port_in_use_is_a_clear_error(run_cli, moodbot_model: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "run", "-m", str(moodbot_model), "-i", "127.0.0.1", "-p", str(port), cwd=tmp_path
        )
    assert result.code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.err
    assert "-p" in result.err


def test_several_workers_need_a_shared_lock_store(
    run_cli, moodbot_model: Path, tmp_path: Path
) -> None:
    result = run_cli("run", "-m", str(moodbot_model), "--workers", "2", cwd=tmp_path)
    assert result.code == 1
    assert "--workers 2 needs a lock store shared by the processes" in result.err
    assert "lock_store" in result.err


def _run_on_a_busy_port(run_cli, tmp_path: Path, *args: str):
    """Runs `botserver run ARGS` on a port in use: every check runs, nothing is served."""
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        return run_cli("run", *args, "-p", str(busy.getsockname()[1]), cwd=tmp_path)


@pytest.mark.parametrize("flag", ["--auth-token", "--jwt-secret"])
def test_an_empty_secret_is_refused_rather_than_turning_auth_off(
    run_cli, moodbot_model: Path, tmp_path: Path, flag: str
) -> None:
    # `--auth-token "$TOKEN"` with TOKEN unset must not serve an open API.
    result = _run_on_a_busy_port(
        run_cli, tmp_path, "-m", str(moodbot_model), "--enable-api", flag, ""
    )
    assert result.code == 1
    assert f"{flag} is empty (an unset environment variable?)" in result.err


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        (["--enable-api"], True),
        (["--enable-api", "-i", "127.0.0.1"], False),
        (["--enable-api", "--auth-token", "s3cret"], False),
        ([], False),
    ],
    ids=["open-on-every-interface", "loopback", "token", "no-api"],
)
def test_an_open_api_reachable_from_other_machines_is_warned_about(
    run_cli, moodbot_model: Path, tmp_path: Path, args: list[str], warned: bool
) -> None:
    result = _run_on_a_busy_port(run_cli, tmp_path, "-m", str(moodbot_model), *args)
    assert "is already in use" in result.err
    assert ("The HTTP API is open" in result.err) is warned


def test_an_unknown_remote_storage_is_refused_at_start(run_cli, tmp_path: Path) -> None:
    result = _run_on_a_busy_port(run_cli, tmp_path, "--remote-storage", "s4", "-m", "bot.tar.gz")
    assert result.code == 1
    assert "--remote-storage 's4' is not supported: use one of aws, gcs, azure" in result.err


def test_an_empty_remote_storage_is_refused_rather_than_serving_the_local_model(
    run_cli, moodbot_model: Path, tmp_path: Path
) -> None:
    # `--remote-storage "$STORAGE"` with STORAGE unset: before, the server loaded the local
    # -m (a model baked into the image, say) as if no storage had been named.
    result = _run_on_a_busy_port(
        run_cli, tmp_path, "--remote-storage", "", "-m", str(moodbot_model), "--enable-api"
    )
    assert result.code == 1
    assert "--remote-storage '' is not supported: use one of aws, gcs, azure" in result.err


@pytest.mark.parametrize(
    ("storage", "variable", "value", "said"),
    [
        ("aws", "REMOTE_STORAGE_TIMEOUT", "soon", "REMOTE_STORAGE_TIMEOUT must be a number of"),
        # Before: the server started, logged "Cannot download ...: Incorrect padding" and
        # served without a model.
        ("azure", "AZURE_ACCOUNT_KEY", "not-the-key", "AZURE_ACCOUNT_KEY is not base64"),
        # Before: the server started, logged "No model 'bot.tar.gz' in GCS bucket
        # 'gs://models'" (or botocore's regexes) and served without a model.
        ("gcs", "BUCKET_NAME", "gs://models", "BUCKET_NAME 'gs://models' is no bucket name"),
        ("aws", "BUCKET_NAME", "models/prod", "-m prod/my-model"),
        ("azure", "AZURE_CONTAINER", "Models", "AZURE_CONTAINER 'Models' is no container name"),
    ],
)
def test_an_unusable_remote_storage_setting_is_refused_at_start(
    run_cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    storage: str,
    variable: str,
    value: str,
    said: str,
) -> None:
    monkeypatch.setenv(variable, value)
    result = _run_on_a_busy_port(run_cli, tmp_path, "--remote-storage", storage, "-m", "bot")
    assert result.code == 1
    assert said in result.err
    assert "Traceback" not in result.err
    if variable == "AZURE_ACCOUNT_KEY":  # a secret, even a wrong one
        assert value not in result.err


def test_missing_tls_certificate(run_cli, moodbot_model: Path, tmp_path: Path) -> None:
    result = run_cli("run", "-m", str(moodbot_model), "--ssl-certificate", "nope.pem", cwd=tmp_path)
    assert result.code == 1
    assert "--ssl-certificate nope.pem: no such file" in result.err


def test_a_certificate_without_its_key_names_the_flag_to_give(
    run_cli, moodbot_model: Path, tmp_path: Path
) -> None:
    # Before: "cannot use the TLS certificate/key (wrong --ssl-password, or a key that does
    # not match the certificate?): [SSL] PEM lib (_ssl.c:3926)", with no password given.
    cert_file, _ = self_signed(tmp_path)
    result = _run_on_a_busy_port(
        run_cli, tmp_path, "-m", str(moodbot_model), "--ssl-certificate", str(cert_file)
    )
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        f"error: --ssl-certificate {cert_file} holds no private key: name the key's file "
        "with --ssl-keyfile"
    )


@pytest.mark.parametrize("flag", ["--response-timeout", "--request-timeout"])
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("-1", "must be 0 (no timeout) or more seconds, not -1"),
        ("nan", "must be 0 (no timeout) or more seconds, not nan"),
        ("soon", "invalid number: 'soon'"),
    ],
)
def test_a_timeout_that_is_no_duration_is_refused_as_rasa_refuses_it(
    run_cli, tmp_path: Path, flag: str, value: str, says: str
) -> None:
    # Rasa's parser reads both as integers: `nan` and `soon` are exit 2 there. Before, `nan`
    # ran the server with no response timeout at all, `-1` was exit 1 after the endpoints
    # and credentials were read, and `--request-timeout -1` was taken without a word.
    result = run_cli("run", flag, value, cwd=tmp_path)
    assert result.code == 2
    assert result.err.splitlines()[-1] == f"botserver run: error: argument {flag}: {says}"


def test_no_timeout_is_0_or_infinite(run_cli, moodbot_model: Path, tmp_path: Path) -> None:
    for value in ("0", "inf", "2.5"):
        result = _run_on_a_busy_port(
            run_cli, tmp_path, "-m", str(moodbot_model), "--response-timeout", value
        )
        assert "is already in use" in result.err, result.err


def test_no_model_without_the_api_stops_the_start_as_rasa(run_cli, tmp_path: Path) -> None:
    # As `rasa run` ("No model found..."): without --enable-api, a model server or remote
    # storage nothing could load a model later. Before, the server ran, not ready, for good.
    result = run_cli("run", "-m", "no-models-here", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    assert "No model found at 'no-models-here'" in result.err
    assert "could never load one later" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "botserver.db").exists()


# 2147483648: before, taken, then a traceback once the model loaded (gc's C int overflowed)
@pytest.mark.parametrize(
    "value", ["abc", "1,2", "-5,1,1", "5000,20,100,1", "1.5,10,10", "2147483648,10,10"]
)
def test_wrong_gc_thresholds_stop_the_start_with_one_line(
    run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    # As a wrong LOG_LEVEL: exit 1 and the `error:` line, before anything is read or served.
    # Before, "abc" was a traceback ending in int()'s ValueError, and "1,2", "-5,1,1" were
    # taken without a word (Python's own thresholds kept for the others; a negative first
    # one a collection at nearly every allocation).
    monkeypatch.setenv("BOTSERVER_GC_THRESHOLDS", value)
    result = run_cli("run", "-m", "no-models-here", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "error: BOTSERVER_GC_THRESHOLDS must be three whole numbers, 0 to 2147483647, separated "
        f"by commas (Python's gc thresholds; default 5000,20,100), not {value!r}"
    ]


WRONG_ENVIRONMENT = [
    ("BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS", "abc", "a number of seconds, 0 or more"),
    ("BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS", "-1", "a number of seconds, 0 or more"),
    ("BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS", "inf", "a number of seconds, 0 or more"),
    ("MAX_NUMBER_OF_PREDICTIONS", "abc", "a whole number of actions, 1 or more"),
    ("MAX_NUMBER_OF_PREDICTIONS", "2.5", "a whole number of actions, 1 or more"),
    ("MAX_NUMBER_OF_PREDICTIONS", "0", "a whole number of actions, 1 or more"),
]


@pytest.mark.parametrize(("name", "value", "must_be"), WRONG_ENVIRONMENT)
def test_a_wrong_server_setting_in_the_environment_stops_the_start_with_one_line(
    run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, must_be: str
) -> None:
    """As BOTSERVER_GC_THRESHOLDS. Before, "abc" was a traceback from the server's imports
    (float() or int() at import), and -1, inf and 0 were taken without a word."""
    monkeypatch.setenv(name, value)
    result = run_cli("run", "-m", "no-models-here", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    assert result.err.strip().splitlines() == [f"error: {name} must be {must_be}, not {value!r}"]


def test_a_wrong_max_number_of_predictions_is_one_line_from_any_command(tmp_path: Path) -> None:
    """Read where the dialogue code is imported (`shell`, `test`, each `--workers` worker):
    before, a traceback ending in int()'s ValueError. (The archive is there, so `shell`'s
    early check for its model lets it on to the dialogue code.)"""
    (tmp_path / "nope.tar.gz").write_bytes(b"not read: the setting stops the command first")
    env = {**os.environ, "MAX_NUMBER_OF_PREDICTIONS": "ten", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*botserver_command(), "shell", "-m", "nope.tar.gz"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    said = result.stderr.strip().splitlines()
    # After the INFO line of the endpoints read (none here), the error alone.
    assert [line for line in said if " INFO " not in line] == [
        "error: MAX_NUMBER_OF_PREDICTIONS must be a whole number of actions, 1 or more, not 'ten'"
    ], said


# -- a real server process -------------------------------------------------------------------
@pytest.mark.timing
def test_a_silent_remote_storage_starts_the_server_without_a_model_and_says_so_once(
    start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Rasa, a model that cannot be fetched at start-up is logged and the server runs, not
    ready; REMOTE_STORAGE_TIMEOUT bounds the wait. Without --enable-api nothing can load one
    later: the warning says to restart (before, it offered PUT /model, which is not served)."""
    with silent_server() as url:
        s3_at(url, monkeypatch)
        monkeypatch.setenv("BUCKET_NAME", "models")
        monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "0.5")
        server = start_server("--remote-storage", "aws", "-m", "prod", cwd=tmp_path)
        server.wait_until("/health/live", timeout=paced(30, below=60))
    assert httpx.get(server.url + "/health/ready").status_code == 503
    log = server.text()
    assert log.count("did not answer within 0.5 s for 'prod.tar.gz'") == 1, log
    assert "S3 bucket 'models' at http://127.0.0.1:" in log
    assert "nothing can load one until a restart" in log, log
    assert "Traceback" not in log


@pytest.mark.parametrize("api", [False, True])
def test_a_model_server_pulled_once_that_is_down_at_start_is_not_waited_for(
    start_server, tmp_path: Path, api: bool
) -> None:
    """With `wait_time_between_pulls: null` the model server is asked once, as in Rasa: when
    it is down then, no pull comes later. The warning says so (before, it offered "a model
    server", and the operator waited for a pull that never came)."""
    (tmp_path / "endpoints.yml").write_text(
        f"models:\n  url: http://127.0.0.1:{free_port()}/model\n  wait_time_between_pulls: null\n"
    )
    server = start_server(*(["--enable-api"] if api else []), cwd=tmp_path)
    server.wait_until("/health/live")
    assert httpx.get(server.url + "/health/ready").status_code == 503
    log = server.text()
    assert log.count("starts without a model") == 1, log
    assert "the model server is asked once" in log, log
    assert "next pull" not in log, log
    if api:
        assert "PUT /model" in log, log
    else:
        assert "nothing can load one until a restart" in log, log


def test_a_model_server_pulled_on_schedule_that_is_down_at_start_names_the_next_pull(
    start_server, tmp_path: Path
) -> None:
    """With pulls on schedule, a model server down at start may still bring a model: the
    warning names its next pull (and not a model server asked once), even without the API."""
    (tmp_path / "endpoints.yml").write_text(
        f"models:\n  url: http://127.0.0.1:{free_port()}/model\n  wait_time_between_pulls: 60\n"
    )
    server = start_server(cwd=tmp_path)
    server.wait_until("/health/live")
    log = server.text()
    assert log.count("starts without a model") == 1, log
    assert "until one is loaded (the model server's next pull, or a restart)" in log, log
    assert "asked once" not in log and "for good" not in log, log


def test_missing_model_starts_not_ready_then_a_loaded_model_makes_it_ready(
    start_server, moodbot_model: Path, tmp_path: Path
) -> None:
    server = start_server("-m", "no-models-here", "--enable-api", "-vv", cwd=tmp_path)
    server.wait_until("/health/live")
    not_ready = httpx.get(server.url + "/health/ready")
    assert not_ready.status_code == 503
    assert "no model is loaded" in not_ready.json()["reasons"]
    # Why, and what follows, each once (before, the reason came twice, the consequence too).
    assert server.text().count("No model found at 'no-models-here'") == 1, server.text()
    assert server.text().count("starts without a model") == 1, server.text()

    loaded = httpx.put(server.url + "/model", json={"model_file": str(moodbot_model)}, timeout=30)
    assert loaded.status_code == 204, loaded.text
    ready = httpx.get(server.url + "/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"

    reply = httpx.post(
        server.url + "/webhooks/rest/webhook",
        json={"sender": "ana", "message": "hello"},
        timeout=30,
    )
    assert reply.json()[0]["text"] == "Hey! How are you?"
    assert server.stop() == 0
    # -vv shows one debug line per turn.
    assert "turn sender=ana intent=greet actions=['utter_greet', 'action_listen']" in server.text()


def test_starter_project_served_with_json_logs_and_no_secret_in_them(
    start_server, starter_copy: Path
) -> None:
    """The starter project served with an auth token and JSON logs; one start also serves a
    body the server must refuse without dying (a_deeply_nested_yaml_body_is_a_400)."""
    token = "s3cr3t-Token-Value"
    server = start_server(
        "--enable-api",
        "--auth-token",
        token,
        "-vv",
        "--log-format",
        "json",
        "--log-file",
        "out.log",
        cwd=starter_copy,
    )
    server.wait_until("/health/ready")
    reply = httpx.post(
        server.url + "/webhooks/rest/webhook", json={"sender": "bo", "message": "hello"}, timeout=30
    )
    assert reply.status_code == 200
    assert reply.json(), "the starter bot answers a greeting"
    denied = httpx.get(server.url + "/conversations/bo/tracker")
    assert denied.status_code == 401
    # A client's misspelt parameter carries the token under a name no pattern knows.
    misspelt = httpx.get(server.url + f"/conversations/bo/tracker?tokn={token}")
    assert misspelt.status_code == 401
    tracker = httpx.get(server.url + f"/conversations/bo/tracker?token={token}").json()
    assert [e["event"] for e in tracker["events"]].count("user") == 1
    metrics = httpx.get(server.url + "/metrics").text
    assert "botserver_turns_total 1.0" in metrics
    a_deeply_nested_yaml_body_is_a_400_and_the_server_lives_on(server, token)
    assert server.stop() == 0

    lines = (starter_copy / "out.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    turns = [r for r in records if r["message"].startswith("turn sender=bo ")]
    assert len(turns) == 1 and turns[0]["level"] == "debug"
    assert any("tracker?token=***" in r["message"] for r in records), "access log redacted"
    assert token not in (starter_copy / "out.log").read_text()
    assert token not in server.text()


def a_deeply_nested_yaml_body_is_a_400_and_the_server_lives_on(
    server: ServerProcess, token: str
) -> None:
    """Found by fuzzing: 50,000 nested lists (a 100 KB body) overflowed libyaml's C stack,
    and the server died of a segmentation fault after a minute of CPU."""
    deep = "nlu:\n- " + "[" * 50_000 + "]" * 50_000 + "\n"
    reply = httpx.post(
        server.url + f"/model/test/intents?token={token}",
        content=deep,
        headers={"Content-Type": "application/x-yaml"},
        timeout=120,
    )
    assert reply.status_code == 400
    assert reply.json()["message"] == "request body:2: the document nests more than 100 levels deep"
    assert httpx.get(server.url + "/health/live").status_code == 200


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_readme_main_command_works_as_written(tmp_path: Path) -> None:
    if not _port_free(5005):
        if os.environ.get("CI") == "true":
            pytest.fail("port 5005 is busy; the README command needs it")
        pytest.skip("port 5005 is busy; the README command needs it")
    bindir = str(Path(botserver_command()[0]).parent)
    command = (
        "botserver init --no-prompt --init-dir mybot && cd mybot && "
        "botserver run -m models --enable-api --log-file out.log"
    )
    output = tmp_path / "readme.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(timeout=2) as client:  # not httpx.get: an SSL context (50 ms) a poll
            while time.monotonic() < deadline:
                assert process.poll() is None, output.read_text()
                try:
                    if client.get("http://127.0.0.1:5005/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            else:
                raise AssertionError(output.read_text())
        reply = httpx.post(
            "http://127.0.0.1:5005/webhooks/rest/webhook",
            json={"sender": "readme", "message": "hi"},
            timeout=30,
        )
        assert reply.status_code == 200 and reply.json()
        status = httpx.get("http://127.0.0.1:5005/status").json()
        assert status["model_file"].endswith(".tar.gz")
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    assert (tmp_path / "mybot" / "out.log").exists()
    assert "is up on http://localhost:5005" in output.read_text()


@pytest.mark.parametrize(
    ("variable", "field"),
    [("BOTSERVER_AUTH_TOKEN", "token"), ("BOTSERVER_JWT_SECRET", "jwt_secret")],
)
def test_secrets_can_come_from_the_environment_and_stay_out_of_ps(
    moodbot_model: Path, monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    # Every local user reads a process's arguments (`ps`, /proc/<pid>/cmdline); its
    # environment only its owner does.
    from cli import build_parser
    from server.api.runner import spec_from_args

    monkeypatch.setenv(variable, "a-secret-of-at-least-32-bytes-from-env")
    args = build_parser().parse_args(["run", "-m", str(moodbot_model), "--enable-api"])
    assert getattr(spec_from_args(args), field) == "a-secret-of-at-least-32-bytes-from-env"
    flag = "--auth-token" if field == "token" else "--jwt-secret"
    given = build_parser().parse_args(["run", "-m", str(moodbot_model), flag, "from-flag-x"])
    assert getattr(spec_from_args(given), field) == "from-flag-x"  # the flag wins


@pytest.fixture
def project_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty project directory, the working directory of the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_spec(args: list[str]) -> Any:
    """The RunSpec `botserver run <args>` starts from, in the current directory."""
    from cli import build_parser
    from server.api.runner import spec_from_args

    return spec_from_args(build_parser().parse_args(["run", *args]))


def test_rasas_run_command_works_in_a_project_without_credentials_yml(
    moodbot_model: Path, project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Rasa's concertbot has no credentials.yml, and the command Rasa's guides (and ours)
    # give names it: Rasa serves the REST channel; before, botserver refused to start.
    from server.errors import InvalidConfig

    command = ["-m", str(moodbot_model), "--enable-api", "--credentials"]
    with caplog.at_level("WARNING"):
        spec = _run_spec([*command, "credentials.yml"])
    assert spec.credentials is None  # the REST channel alone
    assert "--credentials credentials.yml: no such file; serving the REST channel only" in (
        caplog.text
    )
    # Another name is meant: a typo there still stops the start.
    with pytest.raises(InvalidConfig, match="--credentials prod-credentials.yml: no such file"):
        _run_spec([*command, "prod-credentials.yml"])


def test_a_credentials_yml_left_unread_is_said_at_start(
    moodbot_model: Path, project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `rasa run` reads ./credentials.yml without --credentials; botserver does not (a sample
    # file may hold channels that cannot start), and now says so instead of silently
    # serving REST alone while a socket.io web chat cannot connect.
    (project_dir / "credentials.yml").write_text("rest:\nsocketio:\n")
    with caplog.at_level("WARNING"):
        spec = _run_spec(["-m", str(moodbot_model)])
    assert spec.credentials is None
    assert (
        "credentials.yml is here but not read: only the REST channel is on, not socketio. "
        "To serve its channels, add --credentials credentials.yml (Rasa reads it without "
        "the flag)"
    ) in caplog.text
    # `botserver init`'s file names the REST channel alone: nothing to say.
    (project_dir / "credentials.yml").write_text("rest:\n")
    caplog.clear()
    with caplog.at_level("WARNING"):
        _run_spec(["-m", str(moodbot_model)])
    assert "credentials.yml" not in caplog.text


def test_an_unread_credentials_yml_is_not_substituted_for_its_warning(
    moodbot_model: Path,
    project_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The warning needs the channel names alone. Before, the file was read as if served:
    # an unset `${VAR}` made it "(unreadable)" (the channels went unnamed), and a quoted one
    # drew a warning about a file the server does not read.
    monkeypatch.delenv("AUDIT_UNSET_TOKEN", raising=False)
    (project_dir / "credentials.yml").write_text(
        'rest:\nsocketio:\n  user_message_evt: "${QUOTED}"\n'
        "facebook:\n  verify: ${AUDIT_UNSET_TOKEN}\n"
    )
    with caplog.at_level("WARNING"):
        spec = _run_spec(["-m", str(moodbot_model)])
    assert spec.credentials is None
    assert "not read: only the REST channel is on, not socketio, facebook." in caplog.text
    assert "${" not in caplog.text, caplog.text


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("- rest\n- socketio\n", "(unreadable: not a mapping of channel names)"),
        ("rest:\n  a: [1\n", "(unreadable: credentials.yml:3: invalid YAML"),  # file, line
    ],
)
def test_an_unreadable_credentials_yml_is_warned_with_its_reason(
    moodbot_model: Path,
    project_dir: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
    said: str,
) -> None:
    (project_dir / "credentials.yml").write_text(content)
    with caplog.at_level("WARNING"):
        _run_spec(["-m", str(moodbot_model)])
    assert f"only the REST channel is on, not {said}" in caplog.text, caplog.text


def test_rasas_run_flags_are_accepted(moodbot_model: Path, project_dir: Path) -> None:
    from server.errors import InvalidConfig

    # `rasa run models/x.tar.gz -t secret`: the model without -m, -t for --auth-token.
    spec = _run_spec([str(moodbot_model), "--enable-api", "-t", "s3cret", "--request-timeout", "5"])
    assert spec.model_path == str(moodbot_model)
    assert spec.token == "s3cret"
    with pytest.raises(InvalidConfig, match="two models given"):
        _run_spec(["-m", "models/a.tar.gz", str(moodbot_model)])


def test_shell_takes_rasas_conversation_id_flag() -> None:
    from cli import build_parser

    args = build_parser().parse_args(["shell", "--conversation-id", "ana"])
    assert args.sender == "ana"  # the conversation `rasa shell --conversation-id ana` talks in


@pytest.mark.parametrize(
    "command", [["run"], ["prune", "--older-than-days", "5"], ["export"], ["shell"]]
)
def test_endpoints_naming_a_directory_says_so(run_cli, tmp_path: Path, command: list[str]) -> None:
    # Before: a warning "--endpoints config: no such file; running with the default
    # endpoints", then "error: config: cannot read file: [Errno 21] Is a directory".
    (tmp_path / "config").mkdir()
    result = run_cli(*command, "--endpoints", "config", cwd=tmp_path)
    assert result.code == 1
    assert result.err.strip() == (
        "error: --endpoints config is a directory: name the endpoints file in it "
        "(config/endpoints.yml)"
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (
            "https://(app?.example.test",
            "--cors 'https://(app?.example.test': not a valid regular expression (missing )",
        ),
        ("", "--cors '': an empty origin allows nothing"),
        (
            "https://app.example.test/",
            "--cors 'https://app.example.test/': an origin has no path, and a browser's never "
            "matches it: https://app.example.test",
        ),
        (
            "localhost:3000",
            "--cors 'localhost:3000': an origin starts with its scheme, and a browser's never "
            "matches it without one: http://localhost:3000 or https://localhost:3000",
        ),
        # Several origins in one value (`--cors "$ORIGINS"`): before, the error offered
        # `http://a.test,http:` as what was meant.
        (
            "http://a.test,https://b.test",
            "--cors 'http://a.test,https://b.test': one origin per value: "
            "--cors http://a.test https://b.test",
        ),
        (
            "http://a.test https://b.test",
            "--cors 'http://a.test https://b.test': one origin per value: "
            "--cors http://a.test https://b.test",
        ),
        # Quotes kept in the value (an exec-form command, `["--cors", "'*'"]`): `'*'` was
        # taken for a pattern no origin matches, and the server started allowing none.
        (
            "'*'",
            """--cors "'*'": the quotes are part of the value (a command given as a list """
            "passes them on): --cors '*'",
        ),
        (
            '"http://a.test"',
            """--cors '"http://a.test"': the quotes are part of the value (a command given """
            "as a list passes them on): --cors http://a.test",
        ),
    ],
)
def test_a_cors_origin_no_browser_could_send_is_refused(
    run_cli, tmp_path: Path, value: str, says: str
) -> None:
    # Before, each started the server, whose API every browser then refused, without a word
    # (an invalid pattern: a 500 at each request in Rasa).
    result = _run_on_a_busy_port(
        run_cli, tmp_path, "--enable-api", "--cors", "http://ok.test", value
    )
    assert result.code == 1
    assert result.err.splitlines()[-1].startswith(f"error: {says}"), result.err


def test_a_cors_pattern_meant_for_any_port_says_how_to_write_it(
    run_cli, moodbot_model: Path, tmp_path: Path
) -> None:
    # Rasa's `http://localhost:*` let in any port (its start matched); over the whole origin
    # it is a colon any number of times: the browser at http://localhost:3000 is refused.
    # Before, no word of it.
    result = _run_on_a_busy_port(
        run_cli, tmp_path, "-m", str(moodbot_model), "--enable-api", "--cors", "http://localhost:*"
    )
    assert "is already in use" in result.err, result.err
    assert (
        "--cors 'http://localhost:*': ':*' is a colon any number of times, not any port: "
        "write 'http://localhost:\\d+'"
    ) in result.err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_workers_below_one_is_refused_as_other_numbers_out_of_range(
    run_cli, tmp_path: Path, value: str
) -> None:
    # As --port 99999: exit 2 before anything is read. Before, exit 1 after the endpoints,
    # credentials and model were checked.
    result = run_cli("run", "--workers", value, cwd=tmp_path)
    assert result.code == 2
    assert result.err.splitlines()[-1] == (
        f"botserver run: error: argument --workers: must be 1 or more, not {value}"
    )


def test_an_ipv6_interface_in_brackets_says_to_drop_them(run_cli, tmp_path: Path) -> None:
    # `-i [::1]`, as an address is written in a URL. Before: "cannot listen on
    # [::1]:5005: Name or service not known".
    result = run_cli("run", "--enable-api", "-i", "[::1]", "-p", str(free_port()), cwd=tmp_path)
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        "error: -i [::1]: write an IPv6 address without brackets: -i ::1"
    )


def test_a_socketio_websocket_frame_engine_io_would_refuse_is_cut_before_it_is_all_read(
    start_server, tmp_path: Path
) -> None:
    """engine.io refuses a packet over 1 MB (python-socketio's limit, counted in characters,
    at most 4 bytes each), but only once uvicorn has read it all, up to its own 16 MB. The
    server now takes up to 4 MB of a frame: no packet engine.io takes is refused sooner."""
    from websockets.sync.client import connect

    (tmp_path / "credentials.yml").write_text("socketio:\n")
    server = start_server("--enable-api", "--credentials", "credentials.yml", cwd=tmp_path)
    server.wait_until("/health/live")
    ws_url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    with connect(ws_url, max_size=None, compression=None) as ws:
        ws.recv()
        ws.send("40")
        ws.recv()
        ws.send('42["user_uttered",{"message":"' + "é" * 999_000 + '"}]')  # 2 MB, taken
        assert str(ws.recv(timeout=10)).startswith('42["bot_uttered"')
    # Uncompressed: a compressed message is cut at 4 MB as it is inflated, then refused by
    # engine.io (a close 1000).
    with connect(ws_url, max_size=None, compression=None) as ws:
        ws.recv()
        with pytest.raises(Exception):  # noqa: B017 (the close, in the send or after it)
            ws.send("4" + "x" * 4_000_001)
            ws.recv(timeout=10)
    # Before: 1000, engine.io's close after uvicorn read the whole frame; now 1009 (message
    # too big) from uvicorn, before, or 1006 when it hung up while the frame still came.
    assert ws.close_code in (1009, 1006), (ws.close_code, server.text())
