"""Benchmark: full REST turns against the bare HTTP endpoint, in the same run.

    python bench/http_turns.py [--smoke] [--concurrency 1,10,50,200] [--duration 5]
        [--stores sqlite,sqlite-unique,postgres] [--client auto|wrk|python] [--no-workers]
        [--repeat N] [--workers-repeat N] [--workers-only] [--pg-db NAME]
        [--out bench/results/http_turns.json]

Moodbot conversations (greet, mood, answer, goodbye; then a new sender) go to
`POST /webhooks/rest/webhook` at each concurrency, on SQLite and on PostgreSQL, and on SQLite
with every message text made unique (a number appended: no cache keyed by the text can help
there); a bare FastAPI
endpoint under the same uvicorn settings answers a fixed JSON reply. Reported: throughput,
p50/p95/p99, errors, their ratio to the bare endpoint, the server's CPU time per request,
the server's RSS after startup and
after the load, and how 2 workers scale over 1 on PostgreSQL + Redis compared with the bare
endpoint. The load comes from wrk (with a Lua script) when installed, else asyncio + httpx.

On a shared machine one run's ratios move with the machine as much as with the code (the bare
endpoint's own p99 varies by half from one run to the next): `--repeat N` measures the bare
endpoint and every store N times, one round after the other, and judges the targets on the
median of the rounds' ratios, each round's store against the bare endpoint of that round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MOODBOT = Path("/work/shared/bots/moodbot")
WEBHOOK = "/webhooks/rest/webhook"
PG: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "login_db": "test"}
PG_DB = "botserver_bench"
REDIS = ("127.0.0.1", 6379)
# Same for the bare endpoint and the server: the settings `botserver run` uses.
UVICORN_SETTINGS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "log_level": "warning",
    "timeout_keep_alive": 30,
    "backlog": 4096,
    "proxy_headers": False,
    "server_header": False,
}
# The HTTP protocol of both servers (--http-protocol): botserver's own, as `botserver run`
# serves (bench/serve_workers.py), or uvicorn's httptools one (the uvicorn command line).
HTTP_PROTOCOL = "botserver"
UVICORN_FLAGS = [
    flag
    for key, value in UVICORN_SETTINGS.items()
    for flag in (
        [f"--no-{key.replace('_', '-')}"]
        if value is False
        else [f"--{key.replace('_', '-')}", str(value)]
    )
]

# One conversation each; a client that finishes one starts the next with a new sender.
CONVERSATIONS = [
    ["hello", "I am feeling very sad", "no", "bye"],
    ["hi there", "I am great", "are you a bot?", "goodbye"],
    ["good morning", "very unhappy", "yes", "see you later"],
]

WRK_SCRIPT = r"""
-- BENCH_MODE=bot: each connection-free conversation takes its next turn; a conversation is
-- free again when its reply (which names it in recipient_id) arrives. BENCH_MODE=bare (the
-- bare endpoint, whose reply names no conversation): the same conversations and the same work
-- a request, a conversation free again as soon as its message is sent.
local bare = os.getenv("BENCH_MODE") == "bare"
local prefix = os.getenv("BENCH_PREFIX") or "c"
local conversations = %(conversations)s
local free, turn, script_of = {}, {}, {}
local made = 0
-- BENCH_UNIQUE=1: every message text is unique (a number appended), so no cache keyed by the
-- text can answer a second time.
local unique = os.getenv("BENCH_UNIQUE") == "1"
local sent = 0
counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local function new_conversation()
  made = made + 1
  local id = prefix .. "-" .. tostring(tid) .. "-" .. made
  turn[id] = 1
  script_of[id] = conversations[(made %% #conversations) + 1]
  return id
end
local headers = {["Content-Type"] = "application/json"}
function request()
  local id = table.remove(free)
  if id == nil then id = new_conversation() end
  local script = script_of[id]
  local i = turn[id]
  if i >= #script then
    turn[id] = nil
    script_of[id] = nil
  else
    turn[id] = i + 1
  end
  local text = script[i]
  if unique then
    sent = sent + 1
    text = text .. " " .. tostring(tid) .. "n" .. tostring(sent)
  end
  local body = '{"sender":"' .. id .. '","message":"' .. text .. '"}'
  if bare and turn[id] ~= nil then table.insert(free, id) end
  return wrk.format("POST", "%(path)s", headers, body)
end
-- Both modes read every reply the same way, so that the load generator, on the same cores as
-- the servers, costs the bare endpoint what it costs the server: wrk hands Lua a reply's
-- headers and body only when the script has a response(), about 6,000 of wrk's 20,000
-- instructions a request (twenty-seventh round).
function response(status, headers, body)
  local id = string.match(body, '"recipient_id":%%s*"([^"]+)"')
  if id ~= nil and turn[id] ~= nil then table.insert(free, id) end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p95_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


# -- machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_mb = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                ram_mb = int(line.split()[1]) // 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_mb": ram_mb,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def process_tree(pid: int) -> list[int]:
    """A process and its children (uvicorn's workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    return pids


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0-1) of `values`; 0.0 when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def rss_mb(pid: int) -> float:
    """RSS of a process and its children (uvicorn's workers), in MB."""
    return round(_status_total(pid, "VmRSS:") / 1024, 1)


def _status_total(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure (its first number) summed over a process and its
    children."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as handle:
            for line in handle:
                if line.startswith(field):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (uvicorn's workers), in seconds."""
    return sum(_process_cpu(p) for p in process_tree(pid))


def preemptions(pid: int) -> int:
    """Times the kernel took the CPU from a process and its children while they could run
    (involuntary context switches): on shared cores each costs the preempted Python process
    cold caches, the ninth round's explanation of a turn's dearer CPU with two workers."""
    return _status_total(pid, "nonvoluntary_ctxt_switches:")


# Below this share of the workers' CPU, a worker of a 2-worker run served next to nothing.
LOPSIDED = 0.2

# Processes outside the server that a turn also costs, by the name the kernel gives them.
SERVICE_COMMANDS = {"postgres": "postgres", "redis": "redis-server"}


def _stat_cpu(path: Path) -> tuple[str, float] | None:
    """(command name, user + system CPU seconds) from a /proc/<pid>/stat."""
    try:
        text = path.read_text()
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def service_cpu() -> dict[str, dict[int, float]]:
    """CPU seconds so far of every PostgreSQL and Redis process on this machine, by pid."""
    by_name = {command: service for service, command in SERVICE_COMMANDS.items()}
    out: dict[str, dict[int, float]] = {service: {} for service in SERVICE_COMMANDS}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _stat_cpu(stat)
        if found is not None and found[0] in by_name:
            out[by_name[found[0]]][int(stat.parent.name)] = found[1]
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """Where the CPU went during one measured run: the server's processes, PostgreSQL's,
    Redis's, the load generator (wrk as a child of this process, or this process itself), and
    what else ran on the machine (other users), from /proc and getrusage."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.started = time.monotonic()
        self.server = cpu_seconds(server_pid)
        self.preempted = preemptions(server_pid)
        self.services = service_cpu()
        self.load = _own_and_children_cpu()
        self.busy = machine_busy_seconds()
        self.workers = {pid: _process_cpu(pid) for pid in uvicorn_workers(server_pid)}

    def split(self, requests: int) -> dict[str, float]:
        """CPU milliseconds per request of each part, and the busy cores over the window."""
        elapsed = time.monotonic() - self.started
        spent = {"server": cpu_seconds(self.server_pid) - self.server}
        for service, now in service_cpu().items():
            before = self.services[service]
            # A process born during the window counts whole; one that ended is lost (rare).
            spent[service] = sum(t - before.get(pid, 0.0) for pid, t in now.items())
        spent["load_generator"] = _own_and_children_cpu() - self.load
        busy = machine_busy_seconds() - self.busy
        spent["other"] = max(0.0, busy - sum(spent.values()))
        per_request = {k: round(v * 1000 / max(requests, 1), 3) for k, v in spent.items()}
        per_request["total"] = round(busy * 1000 / max(requests, 1), 3)
        per_request["busy_cores"] = round(busy / max(elapsed, 1e-9), 2)
        preempted = preemptions(self.server_pid) - self.preempted
        per_request["server_preemptions"] = round(preempted / max(requests, 1), 2)
        return per_request

    def worker_shares(self) -> list[float]:
        """Each uvicorn worker's share of the workers' CPU over the window, largest first
        (empty with one worker). Workers share one listening socket, so one of them can end
        up with nearly every connection, and the run then measures one worker."""
        spent = [_process_cpu(pid) - before for pid, before in self.workers.items()]
        total = sum(spent)
        if len(spent) < 2 or total <= 0:
            return []
        return sorted((round(s / total, 2) for s in spent), reverse=True)


def uvicorn_workers(pid: int) -> list[int]:
    """The worker processes uvicorn `--workers N` spawned (not multiprocessing's resource
    tracker, its other child)."""
    workers = []
    for child in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
    return workers


def _process_cpu(pid: int) -> float:
    found = _stat_cpu(Path(f"/proc/{pid}/stat"))
    return found[1] if found else 0.0


def _own_and_children_cpu() -> float:
    """This process's CPU and its waited-for children's (wrk, once it has exited)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def service_counters() -> dict[str, int]:
    """PostgreSQL transactions in the bench database (each statement of the server is one),
    commands Redis processed (a script's inner commands included), the reads it made from its
    clients' sockets (about one per round trip: a pipeline's commands arrive in one), and the
    turns that waited in a conversation lock's line, so far. Redis's figures are the whole
    server's: they are the bench's only while nothing else uses that Redis.

    A PostgreSQL backend publishes its counts at most once a second while busy, so a
    window's count is that of the window shifted by up to a second: fair for a steady load.
    """
    import asyncpg

    async def transactions() -> int:
        conn = await asyncpg.connect(
            host=PG["host"], port=PG["port"], user=PG["user"], database=PG["login_db"]
        )
        try:
            value = await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                PG_DB,
            )
        finally:
            await conn.close()
        return int(value or 0)

    with socket.create_connection(REDIS, timeout=2) as sock:
        sock.sendall(b"INFO stats commandstats\r\n")
        reply = b""
        while b"\r\n" not in reply or len(reply) < reply.index(b"\r\n") + 2 + int(
            reply[1 : reply.index(b"\r\n")]
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk

    def stat(name: bytes) -> int:
        return int(reply.split(name + b":")[1].split(b"\r\n")[0])

    # RPUSH is only the lock's line: a turn that found its conversation's lease taken.
    rpush = reply.split(b"cmdstat_rpush:calls=")
    return {
        "pg_statements": asyncio.run(transactions()),
        "redis_commands": stat(b"total_commands_processed"),
        "redis_reads": stat(b"total_reads_processed"),
        "lock_waits": int(rpush[1].split(b",")[0]) if len(rpush) > 1 else 0,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- the model and the stores ----------------------------------------------------------------


SPARSE_PIPELINE = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
    {"name": "DIETClassifier"},
]


def model_archive(text: str) -> Path:
    """`--model`: an archive the benchmarks can serve, made absolute (they run from the
    repository, not from where they were started). A missing or unreadable one is argparse's
    error: a server started on it would serve without a model, and be measured."""
    sys.path.insert(0, str(ROOT))
    from server.errors import ModelError
    from server.models.archive import read_metadata

    path = Path(text).resolve()
    try:
        read_metadata(path)
    except (ModelError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def train_moodbot(out: Path, pipeline: str = "moodbot") -> Path:
    """moodbot as shipped (its spaCy pipeline maps to sentence embeddings when the `dense`
    extra is installed), or with a sparse pipeline (`pipeline="sparse"`)."""
    sys.path.insert(0, str(ROOT))
    import yaml

    from server.training.train import train

    config = MOODBOT / "config.yml"
    if pipeline == "sparse":
        data = yaml.safe_load(config.read_text())
        data["pipeline"] = SPARSE_PIPELINE
        out.mkdir(parents=True, exist_ok=True)
        config = out / "config-sparse.yml"
        config.write_text(yaml.safe_dump(data))
    result = train(config, MOODBOT / "domain.yml", [MOODBOT / "data"], out, force=True)
    return Path(result.path)


def reset_postgres() -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(
            host=PG["host"], port=PG["port"], user=PG["user"], database=PG["login_db"]
        )
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        finally:
            await conn.close()

    asyncio.run(run())


def endpoints_for(store: str, workdir: Path) -> dict[str, Any]:
    if store == "sqlite":
        return {
            "tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(workdir / "bench.db")}
        }
    if store in ("postgres", "postgres+redis"):
        endpoints: dict[str, Any] = {
            "tracker_store": {
                "type": "sql",
                "dialect": "postgresql",
                "url": PG["host"],
                "port": PG["port"],
                "username": PG["user"],
                "db": PG_DB,
                "login_db": PG["login_db"],
            }
        }
        if store == "postgres+redis":
            endpoints["lock_store"] = {"type": "redis", "url": REDIS[0], "port": REDIS[1]}
        return endpoints
    raise SystemExit(f"unknown store {store!r}")


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(
    factory: str, env: dict[str, str], workers: int, workdir: Path, name: str
) -> Iterator[Server]:
    port = free_port()
    log = workdir / f"{name}.log"
    if workers == 1 and HTTP_PROTOCOL == "httptools":
        command = [
            *(sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(BENCH)),
            *(f"http_apps:{factory}", "--host", "127.0.0.1", "--port", str(port)),
            *UVICORN_FLAGS,
        ]
    else:
        # As `botserver run [--workers N]` runs them: a listening socket per worker, and the
        # HTTP protocol it serves with (unless --http-protocol httptools).
        command = [
            *(sys.executable, str(BENCH / "serve_workers.py"), f"http_apps:{factory}"),
            *("--port", str(port), "--workers", str(workers)),
            *("--settings", json.dumps({**UVICORN_SETTINGS, "http": HTTP_PROTOCOL})),
        ]
    # A PYTHONPATH given to the bench comes first, so `PYTHONPATH=<other tree>` serves that
    # tree's `server` under this harness (A/B runs); this checkout is the fallback.
    python_path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
    full_env = {**os.environ, "PYTHONPATH": python_path, **env}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
    server = Server(process, port, log)
    try:
        wait_ready(server, workers)
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(server: Server, workers: int, timeout: float = 180.0) -> None:
    """Until the server answers (and every worker has loaded); a server that exits is
    reported at once. Two workers loading the model on cores other jobs keep busy took over a
    minute (twenty-fourth round, load average 18)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"server exited; see {server.log}:\n{server.log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + "/", timeout=1).status_code == 200:
                if workers > 1:
                    wait_workers(server, workers, deadline)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server not ready after {timeout} s; see {server.log}")


def wait_workers(server: Server, workers: int, deadline: float) -> None:
    """Every worker has loaded the app (its RSS stops growing)."""
    previous = -1.0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_mb(server.process.pid)
        if abs(now - previous) < 1.0:
            return
        previous = now


# -- load generators -------------------------------------------------------------------------


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    mode: str,
    concurrency: int,
    duration: float,
    prefix: str,
    workdir: Path,
    unique: bool = False,
) -> dict[str, Any]:
    script = workdir / "turns.lua"
    lua_conversations = (
        "{"
        + ", ".join("{" + ", ".join(json.dumps(t) for t in c) + "}" for c in CONVERSATIONS)
        + "}"
    )
    script.write_text(WRK_SCRIPT % {"conversations": lua_conversations, "path": WEBHOOK})
    threads = 1 if concurrency < 100 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url + WEBHOOK,
    ]
    env = {
        **os.environ,
        "BENCH_MODE": mode,
        "BENCH_PREFIX": prefix,
        "BENCH_UNIQUE": "1" if unique else "0",
    }
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in output.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": errors,
        "error_kinds": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


def run_python(
    url: str, mode: str, concurrency: int, duration: float, prefix: str, unique: bool = False
) -> dict:
    """The asyncio + httpx client: each of `concurrency` users sends its conversations' turns
    one after the other; a reply other than a 200 with non-empty JSON is an error. `mode`
    (bare or bot) as run_wrk's: both send and read the same."""
    return asyncio.run(_python_load(url, mode, concurrency, duration, prefix, unique))


async def _python_load(
    url: str, mode: str, concurrency: int, duration: float, prefix: str, unique: bool = False
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        # Counted from when the client is ready: making it is not part of the run.
        deadline = time.perf_counter() + duration

        async def user(index: int) -> None:
            nonlocal errors
            number = sent = 0
            while time.perf_counter() < deadline:
                number += 1
                sender = f"{prefix}-{index}-{number}"
                for text in CONVERSATIONS[number % len(CONVERSATIONS)]:
                    if time.perf_counter() >= deadline:
                        return
                    if unique:
                        sent += 1
                        text = f"{text} {index}n{sent}"
                    started = time.perf_counter()
                    try:
                        response = await client.post(
                            WEBHOOK, json={"sender": sender, "message": text}
                        )
                        # Either server's reply is read (as wrk's script does): the client
                        # costs both the same.
                        ok = response.status_code == 200 and bool(response.json())
                    except (httpx.HTTPError, ValueError):  # ValueError: a reply not JSON
                        ok = False
                    latencies.append(time.perf_counter() - started)
                    if not ok:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return percentile(latencies, q) * 1000

    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
    }


class Load:
    """Runs one measured load (after a short warm-up) with the chosen client."""

    def __init__(self, client: str, duration: float, warmup: float, workdir: Path) -> None:
        self.client = client
        self.duration = duration
        self.warmup = warmup
        self.workdir = workdir
        self.runs = 0

    def __call__(
        self,
        server: Server,
        mode: str,
        concurrency: int,
        unique: bool = False,
        count_services: bool = False,
    ) -> dict[str, Any]:
        self.runs += 1
        if self.warmup > 0:
            self._one(server, mode, concurrency, self.warmup, f"w{self.runs}", unique)
        if count_services:
            counted = service_counters()
        window = CpuWindow(server.process.pid)
        point = self._one(server, mode, concurrency, self.duration, f"r{self.runs}", unique)
        # CPU time per request answered, measured over the same run: the server's, and the
        # split over everything the machine ran meanwhile.
        split = window.split(point["requests"])
        point["server_cpu_ms_per_request"] = split["server"]
        point["cpu_ms_per_request"] = split
        shares = window.worker_shares()
        if shares:
            point["worker_cpu_shares"] = shares
        if count_services:
            after = service_counters()
            point["per_request"] = {
                name: round((after[name] - counted[name]) / max(point["requests"], 1), 2)
                for name in after
            }
        return point

    def _one(
        self, server: Server, mode: str, c: int, seconds: float, prefix: str, unique: bool
    ) -> dict:
        prefix = f"{prefix}-{os.getpid()}-{int(time.time())}"
        if self.client == "wrk":
            return run_wrk(server.url, mode, c, seconds, prefix, self.workdir, unique)
        return run_python(server.url, mode, c, seconds, prefix, unique)


# -- the run ---------------------------------------------------------------------------------


def measure_target(
    load: Load,
    factory: str,
    env: dict[str, str],
    mode: str,
    concurrencies: list[int],
    workdir: Path,
    name: str,
    workers: int = 1,
    unique: bool = False,
    count_services: bool = False,
) -> dict[str, Any]:
    with serve(factory, env, workers, workdir, name) as server:
        startup_rss = rss_mb(server.process.pid)
        points = {}
        for concurrency in concurrencies:
            points[str(concurrency)] = load(server, mode, concurrency, unique, count_services)
            print(f"  {name:<22} c={concurrency:<4} {_fmt(points[str(concurrency)])}", flush=True)
        after_rss = rss_mb(server.process.pid)
    return {"rss_startup_mb": startup_rss, "rss_after_mb": after_rss, "points": points}


def _fmt(point: dict[str, Any]) -> str:
    line = (
        f"{point['rps']:>8.1f}/s  p50 {point['p50_ms']:6.2f}  p95 {point['p95_ms']:6.2f}  "
        f"p99 {point['p99_ms']:7.2f} ms  errors {point['errors']}  "
        f"cpu {point.get('server_cpu_ms_per_request', 0):.3f} ms/req"
    )
    if "cpu_ms_per_request" in point:
        line += "\n" + " " * 34 + _fmt_split(point)
    return line


def _fmt_split(point: dict[str, Any]) -> str:
    """CPU ms per request by process group, busy cores, statements and commands per request."""
    split = point["cpu_ms_per_request"]
    text = (
        f"cpu ms/req: server {split['server']:.3f} pg {split['postgres']:.3f} "
        f"redis {split['redis']:.3f} load {split['load_generator']:.3f} "
        f"other {split['other']:.3f} = {split['total']:.3f}; {split['busy_cores']:.2f} cores"
    )
    if "server_preemptions" in split:
        text += f"; server preempted {split['server_preemptions']:.2f}x"
    counts = point.get("per_request")
    if counts:
        text += (
            f"; {counts['pg_statements']} pg stmts, {counts['redis_commands']} redis cmds "
            f"in {counts.get('redis_reads', 0)} reads, {counts.get('lock_waits', 0)} lock waits"
        )
    shares = point.get("worker_cpu_shares")
    if shares:
        text += "; workers' CPU " + " / ".join(f"{share:.2f}" for share in shares)
    return text


def main(argv: list[str] | None = None) -> int:
    global PG_DB, HTTP_PROTOCOL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes (CI)")
    parser.add_argument("--concurrency", default="1,10,50,200")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--stores",
        default="sqlite,sqlite-unique,postgres",
        help="sqlite, postgres; a '-unique' suffix sends every message text "
        "once (no text repeats, so no cache keyed by it helps)",
    )
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 workers run")
    parser.add_argument(
        "--workers-only",
        action="store_true",
        help="only the 1 vs 2 workers run (no per-store targets)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the bare endpoint and every store; the targets take the median "
        "of the rounds' ratios",
    )
    parser.add_argument("--workers-concurrency", type=int, default=50)
    parser.add_argument(
        "--workers-repeat",
        type=int,
        default=1,
        help="alternate 1 and 2 workers this many times (medians)",
    )
    parser.add_argument(
        "--model", type=model_archive, help="a moodbot archive (default: train one)"
    )
    parser.add_argument(
        "--pipeline",
        choices=("moodbot", "sparse"),
        default="moodbot",
        help="train moodbot's own pipeline or a sparse one",
    )
    parser.add_argument(
        "--pg-db",
        default=PG_DB,
        help="the PostgreSQL database the runs create and drop (one of your own on a shared "
        "server)",
    )
    parser.add_argument(
        "--http-protocol",
        choices=("botserver", "httptools"),
        default="botserver",
        help="the HTTP protocol both servers run: botserver's (server/api/http_protocol.py, "
        "what `botserver run` serves with) or uvicorn's own httptools one (every round up to "
        "the nineteenth)",
    )
    parser.add_argument("--out", default=str(BENCH / "results" / "http_turns.json"))
    args = parser.parse_args(argv)
    PG_DB = args.pg_db
    HTTP_PROTOCOL = args.http_protocol
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    stores = [s for s in args.stores.split(",") if s]
    if args.smoke:
        concurrencies, stores = [10], ["sqlite"]
        # Three seconds, not one: wrk counts only the replies that come within its window, and
        # on a slow 2-core host shared with other jobs a SQLite server's commits can all wait
        # longer than a second at once (seen: 0 replies in 1 s, p95 0.8 s over 3 s, while
        # the test suite ran beside it). A warm-up did not help: it is the disk, not a start.
        args.duration, args.warmup, args.no_workers = 3.0, 0.0, True
    client = args.client
    if client == "auto":
        client = "wrk" if wrk_available() else "python"
    if client == "wrk" and args.duration < 1:
        args.duration = 1.0

    notes: list[str] = []
    if ("postgres" in stores or not args.no_workers) and not reachable(PG["host"], PG["port"]):
        notes.append("PostgreSQL unreachable: its runs were skipped")
        stores = [s for s in stores if not s.startswith("postgres")]
        args.no_workers = True
    if not args.no_workers and not reachable(*REDIS):
        notes.append("Redis unreachable: the workers run was skipped")
        args.no_workers = True

    report: dict[str, Any] = {
        "machine": machine(),
        "command": "python bench/http_turns.py " + " ".join(argv or sys.argv[1:]),
        "client": client,
        "pipeline": "given archive" if args.model else args.pipeline,
        "uvicorn": UVICORN_FLAGS,
        "http_protocol": HTTP_PROTOCOL,
        "duration_s": args.duration,
        "concurrency": concurrencies,
        "repeat": args.repeat,
        "notes": notes,
    }
    print(f"client: {client}; {report['machine']['nproc']} cores, {report['machine']['cpu']}")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        workdir = Path(tmp)
        model = args.model or train_moodbot(workdir / "models", args.pipeline)
        load = Load(client, args.duration, args.warmup, workdir)
        if args.workers_only:
            stores = []
        rounds = [
            measure_round(load, model, workdir, stores, concurrencies, not args.workers_only, n)
            for n in range(1, args.repeat + 1)
        ]
        report["targets"] = rounds[0]
        if args.repeat > 1:
            report["rounds"] = rounds
        if not args.no_workers:
            report["workers"] = measure_workers(
                load, model, workdir, args.workers_concurrency, args.workers_repeat
            )
    report["summary"] = summarise(report)
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def measure_round(
    load: Load,
    model: Path,
    workdir: Path,
    stores: list[str],
    concurrencies: list[int],
    bare: bool,
    number: int,
) -> dict[str, Any]:
    """The bare endpoint, then every store, each on a server of its own."""
    label = f" #{number}" if number > 1 else ""
    targets: dict[str, Any] = {}
    if bare:
        targets["bare"] = measure_target(
            load, "bare_app", {}, "bare", concurrencies, workdir, f"bare{label}"
        )
    for store in stores:
        backend = store.removesuffix("-unique")
        if backend == "postgres":
            reset_postgres()
        env = {
            "BENCH_MODEL": str(model),
            "BENCH_ENDPOINTS": json.dumps(endpoints_for(backend, workdir)),
        }
        targets[store] = measure_target(
            load,
            "server_app",
            env,
            "bot",
            concurrencies,
            workdir,
            f"server {store}{label}",
            unique=store != backend,
        )
    return targets


def measure_workers(
    load: Load, model: Path, workdir: Path, concurrency: int, repeat: int = 1
) -> dict[str, Any]:
    """Throughput with 1 and 2 workers: the bare endpoint and the server (PostgreSQL + Redis),
    alternated `repeat` times; scaling from the median throughput of each."""
    out: dict[str, Any] = {"concurrency": concurrency, "repeat": repeat}
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_number in range(repeat):
        for workers in (1, 2):
            runs.setdefault(f"bare_w{workers}", []).append(
                measure_target(
                    load,
                    "bare_app",
                    {},
                    "bare",
                    [concurrency],
                    workdir,
                    f"bare {workers}w #{round_number + 1}",
                    workers,
                )["points"][str(concurrency)]
            )
            reset_postgres()
            env = {
                "BENCH_MODEL": str(model),
                "BENCH_ENDPOINTS": json.dumps(endpoints_for("postgres+redis", workdir)),
            }
            runs.setdefault(f"server_w{workers}", []).append(
                measure_target(
                    load,
                    "server_app",
                    env,
                    "bot",
                    [concurrency],
                    workdir,
                    f"pg+redis {workers}w #{round_number + 1}",
                    workers,
                    count_services=True,
                )["points"][str(concurrency)]
            )
    # A 2-worker run where one worker had (nearly) every connection measured one worker.
    out["one_worker_runs"] = {
        key: sum(1 for p in points if min(p.get("worker_cpu_shares") or [1.0]) < LOPSIDED)
        for key, points in runs.items()
        if key.endswith("_w2")
    }
    for key, points in runs.items():
        by_rps = sorted(points, key=lambda p: p["rps"])
        out[key] = by_rps[(len(by_rps) - 1) // 2]  # the median run (lower middle when even)
        out[f"{key}_rps_runs"] = [p["rps"] for p in points]
    bare_scaling = out["bare_w2"]["rps"] / max(out["bare_w1"]["rps"], 1e-9)
    server_scaling = out["server_w2"]["rps"] / max(out["server_w1"]["rps"], 1e-9)
    out["bare_scaling"] = round(bare_scaling, 3)
    out["server_scaling"] = round(server_scaling, 3)
    out["relative_scaling"] = round(server_scaling / bare_scaling, 3)
    out["cpu_ms_per_request_median"] = {
        key: _median_split([p["cpu_ms_per_request"] for p in points])
        for key, points in runs.items()
    }
    out["cpu_bound"] = cpu_bound_scaling(out["cpu_ms_per_request_median"])
    return out


def cpu_bound_scaling(splits: dict[str, dict[str, float]], cores: int = 2) -> dict[str, float]:
    """The throughput the CPU split allows on otherwise idle cores, and the scaling from it.

    N workers cannot exceed N / (server CPU per request) (each is one Python thread), nor
    the cores / (CPU per request of everything the run needs: server, PostgreSQL, Redis,
    load generator). Other users of the machine drop out, so this is steadier than the
    measured throughput on a shared machine.
    """
    out: dict[str, float] = {}
    for key, split in splits.items():
        workers = int(key.rsplit("_w", 1)[1])
        ours = sum(split[part] for part in ("server", "postgres", "redis", "load_generator"))
        threads = workers * 1000 / max(split["server"], 1e-9)
        out[f"{key}_per_s"] = round(min(threads, cores * 1000 / max(ours, 1e-9)), 1)
    bare = out["bare_w2_per_s"] / max(out["bare_w1_per_s"], 1e-9)
    server = out["server_w2_per_s"] / max(out["server_w1_per_s"], 1e-9)
    out.update(
        bare_scaling=round(bare, 3),
        server_scaling=round(server, 3),
        relative_scaling=round(server / bare, 3),
    )
    return out


def _median_split(splits: list[dict[str, float]]) -> dict[str, float]:
    """The median of each part over the runs."""
    return {part: _median([s[part] for s in splits], 3) for part in splits[0]}


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios to the bare endpoint and the targets' checks. With several rounds each ratio is
    the median of the rounds' (a round's store over that round's bare endpoint), the
    latencies the medians of the rounds', the RSS the largest."""
    rounds: list[dict[str, Any]] = report.get("rounds") or [report.get("targets", {})]
    summary: dict[str, Any] = {}
    for store in [name for name in rounds[0] if name != "bare"]:
        runs: dict[str, dict[str, list[float]]] = {}
        for targets in rounds:
            bare = targets.get("bare", {}).get("points", {})
            for c, point in targets[store]["points"].items():
                run = runs.setdefault(
                    c, {"throughput_ratio": [], "p99_ratio": [], "p50_ms": [], "p99_ms": []}
                )
                run["p50_ms"].append(point["p50_ms"])
                run["p99_ms"].append(point["p99_ms"])
                base = bare.get(c)
                if base:
                    run["throughput_ratio"].append(round(point["rps"] / max(base["rps"], 1e-9), 3))
                    run["p99_ratio"].append(round(point["p99_ms"] / max(base["p99_ms"], 1e-9), 2))
        ratios: dict[str, dict[str, Any]] = {}
        latency: dict[str, dict[str, float]] = {}
        for c, run in runs.items():
            latency[c] = {key: _median(run[key], 3) for key in ("p50_ms", "p99_ms")}
            if not run["throughput_ratio"]:
                continue
            ratios[c] = {
                "throughput_ratio": _median(run["throughput_ratio"], 3),
                "p99_ratio": _median(run["p99_ratio"], 2),
            }
            if len(rounds) > 1:
                ratios[c]["throughput_ratio_runs"] = run["throughput_ratio"]
                ratios[c]["p99_ratio_runs"] = run["p99_ratio"]
        summary[store] = {
            "ratios": ratios,
            "latency_ms": latency,
            "rss_startup_mb": max(targets[store]["rss_startup_mb"] for targets in rounds),
            "rss_after_mb": max(targets[store]["rss_after_mb"] for targets in rounds),
        }
    checks = {}
    for name in ("sqlite", "sqlite-unique"):
        ratio = summary.get(name, {}).get("ratios", {}).get("50")
        if ratio:
            checks[f"{name}_c50_throughput_ratio>=0.40"] = ratio["throughput_ratio"] >= 0.40
            checks[f"{name}_c50_p99_ratio<=2"] = ratio["p99_ratio"] <= 2.0
    one_client = summary.get("sqlite", {}).get("latency_ms", {}).get("1")
    if one_client:
        checks["sqlite_c1_p50<5ms"] = one_client["p50_ms"] < 5
        checks["sqlite_c1_p99<15ms"] = one_client["p99_ms"] < 15
    if "sqlite" in summary:
        checks["rss<250MB"] = summary["sqlite"]["rss_after_mb"] < 250
    if "workers" in report:
        checks["workers_relative_scaling>=0.8"] = report["workers"]["relative_scaling"] >= 0.8
    summary["checks"] = checks
    return summary


def _median(values: list[float], digits: int) -> float:
    return round(statistics.median(values), digits)


def print_table(report: dict[str, Any]) -> None:
    rounds: list[dict[str, Any]] = report.get("rounds") or [report["targets"]]
    for number, targets in enumerate(rounds, start=1):
        bare = targets.get("bare", {}).get("points", {})
        print()
        if len(rounds) > 1:
            print(f"round {number}")
        print(
            f"{'target':<13} {'c':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7} {'x bare':>7} {'p99 x bare':>10}"
        )
        for name, target in targets.items():
            for c, point in target["points"].items():
                base = bare.get(c) or point
                print(
                    f"{name:<13} {c:>4} {point['rps']:>9.1f} {point['p50_ms']:>8.2f} "
                    f"{point['p95_ms']:>8.2f} {point['p99_ms']:>8.2f} {point['errors']:>7} "
                    f"{point['rps'] / max(base['rps'], 1e-9):>7.2f} "
                    f"{point['p99_ms'] / max(base['p99_ms'], 1e-9):>10.2f}"
                )
    summary = report["summary"]
    if len(rounds) > 1:
        print(f"\nmedians over the {len(rounds)} rounds (each round's ratios in brackets)")
        for name in rounds[0]:
            for c, ratio in summary.get(name, {}).get("ratios", {}).items():
                print(
                    f"{name:<13} {c:>4}  x bare {ratio['throughput_ratio']:.2f} "
                    f"{ratio['throughput_ratio_runs']}  p99 x bare {ratio['p99_ratio']:.2f} "
                    f"{ratio['p99_ratio_runs']}"
                )
    print()
    for name in rounds[0]:
        rss = summary.get(name) or rounds[0][name]
        print(
            f"RSS {name:<13} startup {rss['rss_startup_mb']:7.1f} MB   "
            f"after load {rss['rss_after_mb']:7.1f} MB"
        )
    if "workers" in report:
        w = report["workers"]
        print(
            f"\nworkers at c={w['concurrency']}: bare {w['bare_w1']['rps']:.0f} -> "
            f"{w['bare_w2']['rps']:.0f}/s (x{w['bare_scaling']}), pg+redis "
            f"{w['server_w1']['rps']:.0f} -> {w['server_w2']['rps']:.0f}/s "
            f"(x{w['server_scaling']}); relative {w['relative_scaling']}"
        )
        if w.get("repeat", 1) > 1:
            print(
                f"  runs (turns or req/s): bare 1w {w['bare_w1_rps_runs']}, "
                f"2w {w['bare_w2_rps_runs']}; pg+redis 1w {w['server_w1_rps_runs']}, "
                f"2w {w['server_w2_rps_runs']}"
            )
        print("  median CPU ms per request (turn) by process group over the measured runs:")
        for key, split in w["cpu_ms_per_request_median"].items():
            print(f"    {key:<10} " + _fmt_split({"cpu_ms_per_request": split}))
        lopsided = {key: n for key, n in w.get("one_worker_runs", {}).items() if n}
        if lopsided:
            print(
                f"  note: runs where one worker did under {LOPSIDED:.0%} of the workers' CPU "
                f"(one worker had nearly every connection): {lopsided}"
            )
        bound = w["cpu_bound"]
        print(
            f"  on idle cores the CPU split allows: bare {bound['bare_w1_per_s']:.0f} -> "
            f"{bound['bare_w2_per_s']:.0f}/s (x{bound['bare_scaling']}), pg+redis "
            f"{bound['server_w1_per_s']:.0f} -> {bound['server_w2_per_s']:.0f}/s "
            f"(x{bound['server_scaling']}); relative {bound['relative_scaling']}"
        )
        for key in ("server_w1", "server_w2"):
            counts = w[key].get("per_request")
            if counts:
                print(
                    f"    {key} (median run): {counts['pg_statements']} PostgreSQL "
                    f"statements and {counts['redis_commands']} Redis commands in "
                    f"{counts.get('redis_reads', 0)} socket reads per turn"
                )
    print()
    for check, ok in report["summary"]["checks"].items():
        print(f"{'PASS' if ok else 'MISS'}  {check}")
    for note in report["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    raise SystemExit(main())
