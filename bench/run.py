#!/usr/bin/env python3
"""The benchmarks: the release server against the benchmark upstream
(bench/src/bin/upstream.rs), loaded by wrk and timed by bench/src/bin/sse.rs.

    python3 bench/run.py                      # everything, SQLite and Postgres
    python3 bench/run.py --stores sqlite --only chat,stream --runs 3

Each figure is the median of `--runs` runs, with their min and max; latency
figures are each run's p50 and p99. Prints a Markdown table (the README's) and
writes every run's numbers to target/bench/results.json. Needs wrk (Debian's
package) on PATH, and for Postgres a server at $BENCH_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/postgres), where it makes a database of
its own. No timing here is a test: nothing fails on a slow figure.
"""

import argparse
import contextlib
import functools
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
API_PORT, UPSTREAM_PORT, RELAY_PORT, STACK_RELAY_PORT = 8100, 9100, 9200, 9300
API = f"http://127.0.0.1:{API_PORT}"
# Where a run straight at the upstream goes.
UPSTREAM_COMPLETIONS = f"http://127.0.0.1:{UPSTREAM_PORT}/v1/chat/completions"
PASSWORD = "bench-password-1"
QUESTION = "How do iterators work in Rust?"
UPSTREAM_TOKENS = 20
# A fast model's answer: with an instant upstream, 16 connections would only
# measure queueing at full load, not what a request adds.
OVERHEAD_UPSTREAM_MS = 50
OVERHEAD_JITTER_MS = 10
# The stream part's upstream: its first token after 20 ms, then one every 5 ms.
STREAM_PACE = {"ttft_ms": 20, "token_ms": 5}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--only", default="chat,floor,stream,streams,logins,idle,instructions")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    only = set(args.only.split(","))
    # 1,000 streams hold 2,000 sockets in the server and 1,000 in the client.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    if not shutil.which("wrk"):
        sys.exit("wrk is not on PATH (apt-get install wrk)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "server", "-p", "bench"],
                       cwd=ROOT, check=True)

    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "stores": {}}
    for store in args.stores.split(","):
        print(f"=== {store}", flush=True)
        figures = results["stores"][store] = {}
        # Idle and logins first, on a database with no upkeep owed yet.
        phases = {
            "idle": lambda database: idle(database, args.runs),
            "logins": lambda database: logins(database, args),
            "chat": lambda database: chat(database, args),
            "floor": lambda _: postgres_floor(args),
            "stream": lambda database: stream(database, args.runs),
            "streams": lambda database: many_streams(database, args.runs),
            "instructions": lambda database: instructions(database, args.runs),
        }
        with Database(store) as database:
            for name, measure in phases.items():
                if name not in only or (name == "floor" and store != "postgres"):
                    continue
                database.settle()
                figures[name] = measure(database)
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    memory = int(next(line.split()[1] for line in open("/proc/meminfo")
                      if line.startswith("MemTotal"))) // 1024 // 1024
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB, {platform.system()} {platform.release()}"


class Database:
    """A fresh database for one store, dropped afterwards."""

    def __init__(self, store, name="chat_bench"):
        self.store, self.name = store, name

    def __enter__(self):
        if self.store == "sqlite":
            self.dir = tempfile.mkdtemp(prefix="chat-bench-")
            self.url = f"sqlite://{self.dir}/bench.db"
        elif self.store == "postgres":
            admin = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
            self.admin = admin
            self.url = admin.rsplit("/", 1)[0] + "/" + self.name
            psql(admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)", f"CREATE DATABASE {self.name}")
        else:
            sys.exit(f"unknown store {self.store}")
        return self

    def settle(self):
        """Writes out what the last phase left in Postgres's buffers (the chat
        phase stores some 150,000 messages), so that the checkpoint it owes
        does not land in the next phase's figures. No VACUUM ANALYZE: on the
        still empty tables before the chat phase it would tell the planner
        they stay empty (a sequential scan of usage_monthly's dead rows took
        /chat at 64 connections from about 2,600 to 1,840/s). SQLite
        checkpoints its WAL as it goes."""
        if self.store == "postgres":
            psql(self.url, "CHECKPOINT")

    def __exit__(self, *_):
        if self.store == "sqlite":
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            psql(self.admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def psql(url, *commands):
    for command in commands:
        subprocess.run(["psql", url, "-qc", command], check=True, stdout=subprocess.DEVNULL)


class Process:
    """A child process, stopped on exit. Its stderr is ours: a warning shows,
    and a pipe nobody reads could fill and stall it."""

    def __init__(self, command, env=None):
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        return kib / 1024

    def cpu_seconds(self):
        return cpu_seconds(self.process.pid)


def upstream(**pace):
    flags = []
    for name, value in pace.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    process = Process([str(RELEASE / "upstream"), "--port", str(UPSTREAM_PORT),
                       "--tokens", str(UPSTREAM_TOKENS), *flags])
    wait_until_up(f"http://127.0.0.1:{UPSTREAM_PORT}/", any_status=True)
    return process


def server(database, wrapper=(), **extra):
    env = {
        "PATH": os.environ["PATH"],
        "PORT": str(API_PORT),
        "DATABASE_URL": database.url,
        "JWT_SECRET": "bench-only-jwt-secret-0123456789abcdef",
        "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{UPSTREAM_PORT}/v1",
        "OPENAI_MODEL": "bench",
        "RATE_LIMIT_REQUESTS": "100000000/min",
        "RATE_LIMIT_CHAT": "100000000/min",
        "RATE_LIMIT_AUTH": "100000000/min",
        "RUST_LOG": "warn",
        **{key: str(value) for key, value in extra.items()},
    }
    process = Process([*wrapper, str(RELEASE / "server")], env=env)
    wait_until_up(f"{API}/health")
    process.ready_after = time.perf_counter() - process.started
    return process


def wait_until_up(url, any_status=False):
    """Polls every millisecond until `url` answers (200, or anything)."""
    started = time.perf_counter()
    while time.perf_counter() - started < 30:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            if any_status:
                return
        except OSError:
            pass
        time.sleep(0.001)
    sys.exit(f"{url} did not answer within 30 s")


def wait_for_port(port):
    """Until something accepts connections on `port`."""
    started = time.perf_counter()
    while time.perf_counter() - started < 30:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.001)
    sys.exit(f"nothing listens on port {port} after 30 s")


def call(method, path, body=None, token=None, form=False):
    data, headers = None, {}
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(API + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or "null")


def account(sessions=0):
    email = f"bench-{time.monotonic_ns()}@example.com"
    call("POST", "/auth/register", {"email": email, "password": PASSWORD})
    token = call("POST", "/auth/login", {"username": email, "password": PASSWORD}, form=True)["access_token"]
    ids = [call("POST", "/sessions", {"title": f"bench {n}"}, token)["id"] for n in range(sessions)]
    return email, token, ids


def wrk(url, connections, seconds, script=None):
    """One wrk run: requests per second, p50 and p99 in ms, and errors."""
    command = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", script]
    output = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    # A latency in seconds ("1.00s ") keeps a trailing space.
    percent = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", output, re.M))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": millis(percent["50"]),
        "p99": millis(percent["99"]),
        "errors": errors,
    }


def millis(text):
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def wrk_script(body_lua, token=None, method="POST", content_type="application/json"):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    headers = f'wrk.headers["Content-Type"] = "{content_type}"\n'
    if token:
        headers += f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    script.write(f'wrk.method = "{method}"\n{headers}{body_lua}\n')
    script.close()
    return script.name


def conversations(users, sessions_each):
    """(token, session id) for `users` accounts with `sessions_each` sessions:
    the load of many users, not one user's (whose usage row every answer updates)."""
    pairs = []
    for _ in range(users):
        _, token, ids = account(sessions=sessions_each)
        pairs += [(token, session) for session in ids]
    return pairs


def chat_script(pairs):
    """POST /chat, each request to the next conversation, as its user. Users
    are interleaved, and wrk's two threads start half the list apart, so
    requests in flight together are mostly different users'."""
    by_user = {}
    for token, session in pairs:
        by_user.setdefault(token, []).append(session)
    interleaved = [(token, sessions[turn]) for turn in range(max(map(len, by_user.values())))
                   for token, sessions in by_user.items() if turn < len(sessions)]
    rows = ",".join(f'{{"Bearer {token}",{session}}}' for token, session in interleaved)
    return wrk_script(f"""
local conversations = {{{rows}}}
local threads = 0
setup = function(thread)
  thread:set("first", threads * math.floor(#conversations / 2))
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  local c = conversations[(first + n) % #conversations + 1]
  local body = '{{"session_id":' .. c[2] .. ',"message":"{QUESTION}"}}'
  return wrk.format(nil, "/chat", {{["Content-Type"] = "application/json", ["Authorization"] = c[1]}}, body)
end""")


def upstream_body(stream, history=True):
    """What the server sends the upstream for a conversation whose history is
    full (HISTORY_MAX_MESSAGES, 20 with the question), or for a new one, so
    that the upstream reads as much in a run straight at it as in ours."""
    answer = "".join(f"word{index} " for index in range(UPSTREAM_TOKENS))
    turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": answer}] * 10
    messages = turns[1:] + turns[:1] if history else turns[:1]
    return {"model": "bench", "messages": messages, "stream": stream}


def upstream_script():
    body = json.dumps(upstream_body(stream=False))
    return wrk_script(f"wrk.body = {json.dumps(body)}")


def spread(samples):
    """The median of the runs, with their min and max."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def chat(database, args):
    """1: POST /chat against an instant upstream, at 1 to 256 connections.
    2: what it adds to an upstream that takes OVERHEAD_UPSTREAM_MS, at 16
    connections, each run of ours beside a run straight at the upstream."""
    figures = {}
    with server(database, BCRYPT_COST=4) as api:
        ours, theirs = chat_script(conversations(users=64, sessions_each=4)), upstream_script()
        with upstream(latency_ms=0) as fake:
            for connections in (1, 16, 64, 256):
                runs, shares = [], []
                for _ in range(args.runs):
                    with CpuShares(api, fake, database) as share:
                        runs.append(wrk(f"{API}/chat", connections, args.seconds, ours))
                    shares.append(share.per_request(runs[-1]["rps"] * args.seconds))
                figures[connections] = summarize(runs)
                figures[connections]["cpu_ms_per_request"] = {
                    name: spread([share[name] for share in shares]) for name in shares[0]}
                print(f"chat c={connections}: {figures[connections]}", flush=True)
        # In step: 16 clients that start together against a fixed latency
        # keep arriving together. Jittered: the same mean, ± OVERHEAD_JITTER_MS.
        # One connection: what a request adds with nothing to wait behind.
        for name, jitter, connections in (("overhead_16", 0, 16),
                                          ("overhead_16_jittered", OVERHEAD_JITTER_MS, 16),
                                          ("overhead_1", 0, 1)):
            with upstream(latency_ms=OVERHEAD_UPSTREAM_MS, jitter_ms=jitter):
                figures[name] = beside_upstream(f"{API}/chat", ours, theirs, connections, args)
    print(f"overhead at 16: {figures['overhead_16']}; jittered: {figures['overhead_16_jittered']}; "
          f"at 1: {figures['overhead_1']}", flush=True)
    return figures


def beside_upstream(url, script, upstream_script, connections, args):
    """What `url` adds to the upstream's own latency: each wrk run at it
    beside one straight at the upstream, with `upstream_script`; the p50 and
    p99 of each pair's difference."""
    runs, upstream_runs = [], []
    for _ in range(args.runs):
        runs.append(wrk(url, connections, args.seconds, script))
        upstream_runs.append(wrk(UPSTREAM_COMPLETIONS, connections, args.seconds, upstream_script))
        if runs[-1]["errors"] or upstream_runs[-1]["errors"]:
            sys.exit(f"{url} or the upstream failed requests: {runs[-1]}, {upstream_runs[-1]}")
    return {
        "ours": summarize(runs),
        "upstream": summarize(upstream_runs),
        "p50": spread([r["p50"] - u["p50"] for r, u in zip(runs, upstream_runs)]),
        "p99": spread([r["p99"] - u["p99"] for r, u in zip(runs, upstream_runs)]),
    }


def postgres_floor(args):
    """What Postgres alone allows: pgbench running one exchange's statements
    (bench/exchange.sql) at 64 clients with the server stopped, so neither it,
    wrk nor the upstream takes a share of the two cores. /chat cannot exceed
    this on the same machine, whatever the server does. Then Postgres's part
    of the /chat overhead and of the stream's first delta (`overhead_floors`). On a database
    of its own, where its users and sessions are the first, numbered as
    exchange.sql expects. Both again with `synchronous_commit` off for
    pgbench's sessions: what is left without waiting for the disk to flush
    each commit, the part of the floor that durability puts there."""
    with Database("postgres", "chat_bench_floor") as database:
        with server(database, BCRYPT_COST=4):
            pairs = conversations(users=64, sessions_each=4)
        sessions = len(pairs)
        misplaced = subprocess.run(
            ["psql", database.url, "-tAc",
             "SELECT count(*) FROM sessions WHERE user_id <> (id - 1) / 4 + 1"],
            check=True, capture_output=True, text=True).stdout.strip()
        if misplaced != "0":
            sys.exit(f"exchange.sql expects session s to belong to user (s - 1) / 4 + 1; {misplaced} do not")
        now = time.gmtime()

        def pgbench(options, script, clients, *flags):
            return subprocess.run(
                ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
                 "-T", str(args.seconds), "-f", script, "-D", f"sessions={sessions}",
                 "-D", f"month={time.strftime('%Y-%m', now)}",
                 "-D", f"day={time.strftime('%Y-%m-%d', now)}", *flags, database.url],
                env={**os.environ, "PGOPTIONS": options},
                check=True, capture_output=True, text=True).stdout

        figures = {}
        for name, options in (("durable", ""), ("unflushed", "-c synchronous_commit=off")):
            pgbench_with = functools.partial(pgbench, options)
            rates = []
            for _ in range(args.runs):
                output = pgbench_with(str(ROOT / "bench" / "exchange.sql"), 64)
                rates.append(float(re.search(r"^tps = ([\d.]+)", output, re.M).group(1)))
            figures[name] = {"exchanges_per_second": spread(rates),
                             **overhead_floors(pgbench_with, args.runs)}
        for name in RELAYS:
            figures[name] = relay_overhead(name, database, sessions, now, args)
            if "instructions" in args.only.split(","):
                figures[name]["instructions"] = relay_instructions(name, database, sessions, now, args.runs)
        print(f"postgres floor: {figures}", flush=True)
        return figures


# bench's two relays: an exchange's hops alone, on plain sockets; and the
# same hops through the server's stack. Their binary, port and upstream.
RELAYS = {
    "relay": ("relay", RELAY_PORT, f"127.0.0.1:{UPSTREAM_PORT}"),
    "stack": ("stack-relay", STACK_RELAY_PORT, UPSTREAM_COMPLETIONS),
}


def relay(name, database, sessions, now, wrapper=()):
    """One of RELAYS, running exchange.sql on `database`'s sessions; its URL."""
    binary, port, upstream_address = RELAYS[name]
    process = Process(
        [*wrapper, str(RELEASE / binary), "--port", str(port), "--upstream", upstream_address,
         "--database-url", database.url, "--script", str(ROOT / "bench" / "exchange.sql"),
         "--sessions", str(sessions), "--month", time.strftime("%Y-%m", now),
         "--day", time.strftime("%Y-%m-%d", now)])
    wait_for_port(port)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def relay_overhead(name, database, sessions, now, args):
    """The floors under the server's whole /chat overhead, not only
    Postgres's part. `relay` makes an exchange's hops (exchange.sql's
    question, the upstream, its answer) and does nothing else, blocking on
    plain sockets, a thread per connection; `stack-relay` makes the same
    hops with axum, sqlx and reqwest on tokio, as the server does, and
    nothing else. What each adds to the upstream, at 16 connections and at
    one, as the server's is measured."""
    body = upstream_script()
    # The upstream first: the relay connects to it as it starts.
    with upstream(latency_ms=OVERHEAD_UPSTREAM_MS):
        process, url = relay(name, database, sessions, now)
        with process:
            return {f"overhead_{connections}": beside_upstream(url, body, body, connections, args)
                    for connections in (16, 1)}


def relay_instructions(name, database, sessions, now, runs):
    """What a relay executes per exchange under callgrind, as the server's
    is counted (`instructions`): what the hops cost in code, raw and
    through the server's stack."""
    body = json.dumps(upstream_body(stream=False))
    with callgrind() as (wrapper, count), upstream(latency_ms=0):
        process, url = relay(name, database, sessions, now, wrapper)
        with process:
            exchange = keep_alive_exchange(url, body, {"Content-Type": "application/json"})
            return count(process, exchange, runs)


def overhead_floors(pgbench, runs):
    """Postgres's own part of the /chat overhead at 16 connections and at
    one, and of the stream's first delta: pgbench's 16 clients start
    together, as wrk's and sse's do, and run the exchange's two statements
    as far apart as the upstream keeps the server waiting between them. For the overhead, beside
    each run the same with `SELECT 1` for each statement; for the first
    delta, with `SELECT 1` for the question's statement alone, the answer's
    staying in both, so that only the question's statement differs. The p50
    and p99 of the first minus the second's: what the statements add, on
    this machine, with nothing of ours running."""
    exchange = (ROOT / "bench" / "exchange.sql").read_text()
    question, answer = exchange.index("WITH standing"), exchange.index("-- The answer")
    header = exchange[:question]

    def apart(first, second, ms):
        return f"{header}{first}\n\\sleep {ms} ms\n{second}"

    streamed_ms = STREAM_PACE["ttft_ms"] + UPSTREAM_TOKENS * STREAM_PACE["token_ms"]
    overhead = (apart(exchange[question:answer], exchange[answer:], OVERHEAD_UPSTREAM_MS),
                apart("SELECT 1;", "SELECT 1;", OVERHEAD_UPSTREAM_MS))
    pairs = {
        "overhead_16": (16, overhead),
        "overhead_1": (1, overhead),
        "first_delta_16": (16, (apart(exchange[question:answer], exchange[answer:], streamed_ms),
                                apart("SELECT 1;", exchange[answer:], streamed_ms))),
    }
    return {name: added_latency(pgbench, runs, clients, measured, baseline)
            for name, (clients, (measured, baseline)) in pairs.items()}


def added_latency(pgbench, runs, clients, measured, baseline):
    """p50 and p99 of the pgbench script `measured` minus `baseline`'s."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-pgbench-") as directory:
        scripts = {"measured": measured, "baseline": baseline}
        latencies = {name: [] for name in scripts}
        for run in range(runs):
            for name, text in scripts.items():
                script = Path(directory) / f"{name}.sql"
                script.write_text(text)
                prefix = Path(directory) / f"{name}-{run}"
                pgbench(str(script), clients, "--log", f"--log-prefix={prefix}")
                # One line per transaction; the third field is its latency in µs.
                samples = sorted(int(line.split()[2]) / 1000
                                 for log in Path(directory).glob(f"{prefix.name}.*")
                                 for line in log.read_text().splitlines())
                latencies[name].append({q: samples[int(len(samples) * q / 100)] for q in (50, 99)})
    return {f"p{q}": spread([m[q] - b[q] for m, b in zip(latencies["measured"], latencies["baseline"])])
            for q in (50, 99)}


class CpuShares:
    """CPU time (user and system) taken during a run by the server, the
    upstream, wrk and, when it runs on this machine, Postgres: what each
    request costs each of them, and so what the two cores allow."""

    def __init__(self, api, fake, database):
        self.api, self.fake, self.database = api, fake, database

    def __enter__(self):
        self.before = self.sample()
        return self

    def __exit__(self, *_):
        self.after = self.sample()

    def sample(self):
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "server": self.api.cpu_seconds(),
            "upstream": self.fake.cpu_seconds(),
            "wrk": children.ru_utime + children.ru_stime,
            "postgres": sum(map(cpu_seconds, postgres_pids())) if self.database.store == "postgres" else 0.0,
        }

    def per_request(self, requests):
        return {name: (self.after[name] - self.before[name]) * 1000 / requests for name in self.before}


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids():
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "postgres":
                    pids.append(pid)
        except OSError:
            pass
    return pids


def summarize(runs):
    return {key: spread([run[key] for run in runs]) for key in ("rps", "p50", "p99", "errors")}


def summarize_latency(runs):
    return {key: spread([run[key] for run in runs]) for key in ("p50", "p99", "errors")}


def sse(url, token, concurrency, streams, body, sessions=()):
    command = [str(RELEASE / "sse"), "--url", url, "--concurrency", str(concurrency),
               "--streams", str(streams), "--body", json.dumps(body)]
    if token:
        command += ["--token", token]
    if sessions:
        command += ["--sessions", ",".join(map(str, sessions))]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def stream(database, runs):
    """3: time to the first delta and the gap per token, ours minus the
    upstream's: 16 clients, 16 users each going on with a conversation; and
    the first delta when each stream starts a new conversation (one more
    write, the session, before the question is stored). Against a fixed pace
    the 16 clients stay in step, so each stream starts in a burst of 16 and
    the median one waits behind half of it; one client alone, 40 streams,
    gives what a stream adds with no burst to wait behind."""
    figures = {"pace": STREAM_PACE}
    with upstream(**STREAM_PACE), server(database):
        pairs = conversations(users=16, sessions_each=1)
        token = ",".join(token for token, _ in pairs)
        sessions = [session for _, session in pairs]
        going_on, started = upstream_body(stream=True), upstream_body(stream=True, history=False)
        ours, new, theirs, theirs_new, alone, theirs_alone = [], [], [], [], [], []
        for _ in range(runs):
            theirs.append(sse(UPSTREAM_COMPLETIONS, None, 16, 20, going_on))
            ours.append(sse(f"{API}/chat/stream", token, 16, 20, {"message": QUESTION}, sessions))
            theirs_new.append(sse(UPSTREAM_COMPLETIONS, None, 16, 20, started))
            new.append(sse(f"{API}/chat/stream", token, 16, 20, {"message": QUESTION}))
            theirs_alone.append(sse(UPSTREAM_COMPLETIONS, None, 1, 40, going_on))
            alone.append(sse(f"{API}/chat/stream", token, 1, 40, {"message": QUESTION}, sessions))
        for run in ours + new + theirs + theirs_new + alone + theirs_alone:
            assert run["errors"] == 0, run
        for name, key in (("first_delta", "first_delta_ms"), ("gap", "gap_ms")):
            for quantile in ("p50", "p99"):
                figures[f"{name}_{quantile}_overhead"] = spread(
                    [o[key][quantile] - t[key][quantile] for o, t in zip(ours, theirs)])
                figures[f"{name}_{quantile}"] = spread([o[key][quantile] for o in ours])
                figures[f"{name}_{quantile}_upstream"] = spread([t[key][quantile] for t in theirs])
        for quantile in ("p50", "p99"):
            figures[f"new_first_delta_{quantile}_overhead"] = spread(
                [n["first_delta_ms"][quantile] - t["first_delta_ms"][quantile] for n, t in zip(new, theirs_new)])
            figures[f"alone_first_delta_{quantile}_overhead"] = spread(
                [a["first_delta_ms"][quantile] - t["first_delta_ms"][quantile]
                 for a, t in zip(alone, theirs_alone)])
    print(f"stream: {figures}", flush=True)
    return figures


def many_streams(database, runs):
    """3: 1,000 streams open at once: the server's resident memory and CPU."""
    count, pace = 1000, {"ttft_ms": 1000, "token_ms": 200}
    figures = {"streams": count, "pace": pace}
    peaks, growth, cpu, most_open = [], [], [], []
    with upstream(**pace):
        for _ in range(runs):
            with server(database, DB_MAX_CONNECTIONS=20) as api:
                _, token, _ = account()
                before_rss, before_cpu = api.rss_mib(), api.cpu_seconds()
                probe = subprocess.Popen(
                    [str(RELEASE / "sse"), "--url", f"{API}/chat/stream", "--token", token,
                     "--concurrency", str(count), "--streams", "1",
                     "--body", json.dumps({"message": QUESTION})],
                    stdout=subprocess.PIPE, text=True)
                peak = 0
                while probe.poll() is None:
                    peak = max(peak, api.rss_mib())
                    time.sleep(0.05)
                result = json.loads(probe.stdout.read())
                assert result["errors"] == 0, result
                peaks.append(peak)
                growth.append(peak - before_rss)
                cpu.append(api.cpu_seconds() - before_cpu)
                most_open.append(result["most_open_at_once"])
    figures.update(peak_rss_mib=spread(peaks), rss_growth_mib=spread(growth),
                   cpu_seconds=spread(cpu), most_open_at_once=spread(most_open))
    print(f"streams: {figures}", flush=True)
    return figures


def probe(path, token, per_second, seconds):
    """GET `path` at a steady `per_second` on one connection (a user clicking
    around, not a load of its own): p50 and p99 in ms."""
    connection = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    latencies, errors = [], 0
    started = time.perf_counter()
    for n in range(int(per_second * seconds)):
        time.sleep(max(0.0, started + n / per_second - time.perf_counter()))
        sent = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        latencies.append((time.perf_counter() - sent) * 1000)
        errors += response.status != 200
    latencies.sort()
    rank = lambda q: latencies[max(0, math.ceil(q * len(latencies)) - 1)]
    return {"p50": rank(0.5), "p99": rank(0.99), "errors": errors}


def logins(database, args):
    """4: logins per second against the bcrypt limit, and the latency of
    GET /sessions, requested 50 times a second, while logins saturate the cores."""
    figures = {}
    cost = 12
    with upstream(), server(database, BCRYPT_COST=cost):
        email, token, _ = account(sessions=20)
        hash_ms = json.loads(subprocess.run([str(RELEASE / "bcrypt-cost"), "--cost", str(cost)],
                                            check=True, capture_output=True, text=True).stdout)
        limit = os.cpu_count() / (hash_ms["median_ms"] / 1000)
        form = urllib.parse.urlencode({"username": email, "password": PASSWORD})
        login = wrk_script(f'wrk.body = "{form}"', content_type="application/x-www-form-urlencoded")
        login_runs, list_runs, quiet_runs = [], [], []
        # wrk counts the logins that end in its window; the 4 still hashing at
        # its end (half done on average, 2 hashes of work) are lost. That is 4%
        # of 5 s on 2 cores, so logins get at least 20 s, where it is 1%.
        seconds = max(args.seconds, 20)
        for _ in range(args.runs):
            quiet_runs.append(probe("/sessions", token, 50, seconds))
            listed = {}
            lister = threading.Thread(target=lambda: listed.update(probe("/sessions", token, 50, seconds)))
            lister.start()
            login_runs.append(wrk(f"{API}/auth/login", 4, seconds, login))
            lister.join()
            list_runs.append(listed)
        figures = {
            "bcrypt_cost": cost,
            "hash_ms": hash_ms["median_ms"],
            "limit_per_second": limit,
            "logins": summarize(login_runs),
            "share_of_limit": spread([run["rps"] / limit for run in login_runs]),
            "sessions_during_logins": summarize_latency(list_runs),
            "sessions_alone": summarize_latency(quiet_runs),
        }
    print(f"logins: {figures}", flush=True)
    return figures


def idle(database, runs):
    """5: start to the first served request, and resident memory when idle."""
    ready, rss = [], []
    with upstream():
        for _ in range(runs):
            with server(database) as api:
                ready.append(api.ready_after * 1000)
                time.sleep(1)
                rss.append(api.rss_mib())
    figures = {"ready_ms": spread(ready), "idle_rss_mib": spread(rss)}
    print(f"idle: {figures}", flush=True)
    return figures


def instructions(database, runs):
    """The instructions the server executes for one POST /chat exchange, as
    valgrind's callgrind counts them: unlike a time, the same on a slow or a
    busy machine, so a change's effect shows in one run. Sequential exchanges
    in one conversation whose history is already full (HISTORY_MAX_MESSAGES),
    against an instant upstream: everything the server runs between zeroing
    the counters and dumping them, so its background tasks too (negligible
    beside 200 exchanges). Postgres's own share is not in it: bench does not
    start the Postgres server, so it cannot run it under valgrind."""
    with callgrind() as (wrapper, count), upstream(latency_ms=0), \
            server(database, wrapper, BCRYPT_COST=4) as api:
        _, token, (session,) = account(sessions=1)
        body = json.dumps({"session_id": session, "message": QUESTION})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        figures = count(api, keep_alive_exchange(f"{API}/chat", body, headers), runs)
    print(f"instructions: {figures}", flush=True)
    return figures


def keep_alive_exchange(url, body, headers):
    """A POST of `body` to `url` on one kept-alive connection, as a client
    of an API keeps; each call one exchange, which must answer 200."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def exchange():
        connection.request("POST", parts.path, body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"POST {url} answered {response.status}")

    exchange.close = connection.close
    return exchange


@contextlib.contextmanager
def callgrind(exchanges=200):
    """A wrapper that runs a process under callgrind, and `count(process,
    exchange, runs)`, which makes 25 exchanges (a full history), then per run
    zeroes the counters, makes `exchanges` more and dumps them: the
    instructions per exchange, and the distinct lines of code executed.
    `exchange` is a `keep_alive_exchange`, whose connection it closes."""
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not on PATH (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="chat-bench-callgrind-") as directory:
        out = Path(directory) / "callgrind.out"
        wrapper = ["valgrind", "--quiet", "--tool=callgrind", "--dump-instr=yes",
                   f"--callgrind-out-file={out}"]

        def count(process, exchange, runs):
            def control(command):
                subprocess.run(["callgrind_control", command, str(process.process.pid)],
                               check=True, stdout=subprocess.DEVNULL)

            for _ in range(25):
                exchange()
            counts, footprints = [], []
            for run in range(1, runs + 1):
                control("--zero")
                for _ in range(exchanges):
                    exchange()
                control("--dump")
                dump = Path(f"{out}.{run}").read_text(errors="replace")
                total = int(re.search(r"^summary: (\d+)$", dump, re.M).group(1))
                counts.append(total / exchanges)
                footprints.append(code_lines(dump) * 64 / 1024)
            exchange.close()
            return {"per_exchange": spread(counts), "code_kib": spread(footprints)}

        yield wrapper, count


def code_lines(dump):
    """The distinct 64-byte lines of code a callgrind dump (`--dump-instr=yes`)
    executed: the cache lines a request fetches when it finds the caches cold,
    as after the upstream's 50 ms on a shared machine. Each cost line starts
    with its instruction's address, absolute (`0x...`), relative to the last
    (`+n`, `-n`) or the same (`*`)."""
    lines, address = set(), 0
    for position in re.finditer(r"^(0x[0-9a-f]+|[+-]\d+|\*)\s", dump, re.M):
        position = position.group(1)
        if position.startswith("0x"):
            address = int(position, 16)
        elif position != "*":
            address += int(position)
        lines.add(address >> 6)
    return len(lines)


def table(results):
    lines = [f"Measured {results['date']} on {results['machine']}.", "",
             "| Figure | Store | Median | Min | Max | Target |", "|---|---|---|---|---|---|"]

    def row(name, store, figure, unit, target=""):
        lines.append(f"| {name} | {store} | {figure['median']:.1f} {unit} | {figure['min']:.1f} | "
                     f"{figure['max']:.1f} | {target} |")

    for store, figures in results["stores"].items():
        if "chat" in figures:
            for connections in (1, 16, 64, 256):
                chat_figures = figures["chat"][connections]
                target = "≥ 2,000 (Postgres)" if connections == 64 else ""
                row(f"POST /chat, {connections} connections: requests/s", store, chat_figures["rps"], "", target)
                row(f"POST /chat, {connections} connections: p50", store, chat_figures["p50"], "ms")
                row(f"POST /chat, {connections} connections: p99", store, chat_figures["p99"], "ms")
            cpu = figures["chat"][64]["cpu_ms_per_request"]
            for name in ("server", "postgres", "wrk", "upstream"):
                if store == "postgres" or name != "postgres":
                    row(f"POST /chat, 64 connections: CPU per request, {name}", store,
                        {key: value * 1000 for key, value in cpu[name].items()}, "µs")
            overhead = figures["chat"]["overhead_16"]
            row(f"/chat overhead at 16 (upstream {OVERHEAD_UPSTREAM_MS} ms): p50", store, overhead["p50"], "ms", "≤ 2 ms")
            row(f"/chat overhead at 16 (upstream {OVERHEAD_UPSTREAM_MS} ms): p99", store, overhead["p99"], "ms", "≤ 10 ms")
            jittered = figures["chat"]["overhead_16_jittered"]
            row(f"/chat overhead at 16 (upstream {OVERHEAD_UPSTREAM_MS} ± {OVERHEAD_JITTER_MS} ms): p50", store,
                jittered["p50"], "ms")
            row(f"/chat overhead at 16 (upstream {OVERHEAD_UPSTREAM_MS} ± {OVERHEAD_JITTER_MS} ms): p99", store,
                jittered["p99"], "ms")
            alone = figures["chat"]["overhead_1"]
            row(f"/chat overhead at 1 (upstream {OVERHEAD_UPSTREAM_MS} ms): p50", store, alone["p50"], "ms")
            row(f"/chat overhead at 1 (upstream {OVERHEAD_UPSTREAM_MS} ms): p99", store, alone["p99"], "ms")
        if "floor" in figures:
            for name, label, target in (("durable", "", "bounds"), ("unflushed", ", commits not flushed", "")):
                floor = figures["floor"][name]
                row(f"pgbench, one exchange's SQL, 64 clients{label}: exchanges/s", store,
                    floor["exchanges_per_second"], "", target and f"{target} /chat")
                for quantile in ("p50", "p99"):
                    row(f"pgbench, the same at 16 clients, {OVERHEAD_UPSTREAM_MS} ms apart{label}: added {quantile}",
                        store, floor["overhead_16"][quantile], "ms", target and f"{target} the overhead")
                for quantile in ("p50", "p99"):
                    row(f"pgbench, the same at 1 client, {OVERHEAD_UPSTREAM_MS} ms apart{label}: added {quantile}",
                        store, floor["overhead_1"][quantile], "ms")
                for quantile in ("p50", "p99"):
                    row(f"pgbench, the same, as far apart as a stream's, question alone{label}: added {quantile}",
                        store, floor["first_delta_16"][quantile], "ms", target and f"{target} the first delta")
            # The raw relay's p99 bounds nothing: it has come out above the
            # server's (16 Postgres connections at once, where the server's
            # pool holds 10).
            for name, label in (("relay", "bench's relay (an exchange's I/O alone)"),
                                ("stack", "bench's stack-relay (the same through axum, sqlx, reqwest)")):
                relay_figures = figures["floor"][name]
                for connections, at in ((16, "16 connections"), (1, "1 connection")):
                    for quantile in ("p50", "p99"):
                        row(f"{label} at {at}, upstream {OVERHEAD_UPSTREAM_MS} ms: added {quantile}", store,
                            relay_figures[f"overhead_{connections}"][quantile], "ms",
                            "bounds the overhead" if (name, connections, quantile) == ("relay", 16, "p50") else "")
                if "instructions" in relay_figures:
                    row(f"{label}: instructions per exchange (callgrind)", store,
                        {k: v / 1000 for k, v in relay_figures["instructions"]["per_exchange"].items()}, "thousand")
                    row(f"{label}: code executed (callgrind)", store,
                        relay_figures["instructions"]["code_kib"], "KiB")
        if "stream" in figures:
            row("stream first-delta overhead: p50", store, figures["stream"]["first_delta_p50_overhead"], "ms", "≤ 2 ms")
            row("stream first-delta overhead: p99", store, figures["stream"]["first_delta_p99_overhead"], "ms")
            row("stream first-delta overhead, new conversation: p50", store,
                figures["stream"]["new_first_delta_p50_overhead"], "ms")
            row("stream first-delta overhead, new conversation: p99", store,
                figures["stream"]["new_first_delta_p99_overhead"], "ms")
            row("stream first-delta overhead, one stream at a time: p50", store,
                figures["stream"]["alone_first_delta_p50_overhead"], "ms")
            row("stream first-delta overhead, one stream at a time: p99", store,
                figures["stream"]["alone_first_delta_p99_overhead"], "ms")
            row("stream added gap per token: p50", store, figures["stream"]["gap_p50_overhead"], "ms")
            row("stream added gap per token: p99", store, figures["stream"]["gap_p99_overhead"], "ms")
        if "streams" in figures:
            row("1,000 open streams: peak RSS", store, figures["streams"]["peak_rss_mib"], "MiB", "≤ 100 MB")
            row("1,000 open streams: CPU", store, figures["streams"]["cpu_seconds"], "s")
        if "logins" in figures:
            logins_figures = figures["logins"]
            row("logins/s", store, logins_figures["logins"]["rps"], "",
                f"limit {logins_figures['limit_per_second']:.1f}")
            row("logins: share of the bcrypt limit", store,
                {k: v * 100 for k, v in logins_figures["share_of_limit"].items()}, "%", "≥ 90%")
            row("GET /sessions p99 during logins", store, logins_figures["sessions_during_logins"]["p99"], "ms", "≤ 20 ms")
        if "instructions" in figures:
            row("POST /chat: server instructions per exchange (callgrind)", store,
                {k: v / 1000 for k, v in figures["instructions"]["per_exchange"].items()}, "thousand")
            row("POST /chat: server code executed (callgrind)", store,
                figures["instructions"]["code_kib"], "KiB")
        if "idle" in figures:
            row("start to first response", store, figures["idle"]["ready_ms"], "ms", "≤ 200 ms")
            row("idle RSS", store, figures["idle"]["idle_rss_mib"], "MiB", "≤ 20 MB")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
