#!/usr/bin/env python3
"""Cold start of each Lambda function, from the exec of its binary to its first
response, under cargo lambda's Lambda emulator.

The emulator runs with --only-lambda-apis, so the function is not started by
it: this script execs the built binary itself, at once sends GET /health to the
function URL route (the emulator queues it until the runtime asks for work),
and stops the clock when the response arrives. The store is a SQLite file
migrated beforehand, as on a warm deployment; Secrets Manager is not involved.
Where `cargo lambda build --output-format zip` has left a function's
bootstrap.zip (target/lambda/FUNCTION/), its size is reported too.

Usage (from the repository root, with cargo-lambda on PATH):
    cargo build --release -p auth -p sessions -p chat -p chat-stream -p admin
    cargo lambda build --release --arm64 --output-format zip \
        -p auth -p sessions -p chat -p chat-stream -p admin     # the sizes
    python3 bench/lambda_cold_start.py [--runs 10] [--bin-dir target/release]
"""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

FUNCTIONS = ["auth", "sessions", "chat", "chat-stream", "admin"]
ZIPS = os.path.join("target", "lambda")


def wait_for_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the emulator did not listen on {port}")


def one_cold_start(binary, port, env):
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lambda-url/_/health", timeout=60) as response:
            response.read()
            status = response.status
        elapsed = time.perf_counter() - started
    finally:
        process.kill()
        process.wait()
    if status != 200:
        raise SystemExit(f"{binary}: /health answered {status}")
    return elapsed * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bin-dir", default="target/release")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()

    emulator = subprocess.Popen(
        ["cargo", "lambda", "watch", "--only-lambda-apis", "-P", str(args.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(args.port)
        workdir = tempfile.mkdtemp()
        env = dict(os.environ,
                   AWS_LAMBDA_FUNCTION_NAME="_", AWS_LAMBDA_FUNCTION_VERSION="1",
                   AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
                   AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{args.port}/.rt",
                   DATABASE_URL=f"sqlite://{workdir}/cold.db",
                   JWT_SECRET="bench-only-jwt-secret-0123456789abcdef", RUST_LOG="warn")
        print("| function | median ms | min ms | max ms | runs | zipped |")
        print("| --- | --- | --- | --- | --- | --- |")
        for function in FUNCTIONS:
            binary = os.path.join(args.bin_dir, function)
            one_cold_start(binary, args.port, env)  # creates and migrates the database
            times = [one_cold_start(binary, args.port, env) for _ in range(args.runs)]
            zipped = os.path.join(ZIPS, function, "bootstrap.zip")
            size = f"{os.path.getsize(zipped) / 1e6:.1f} MB" if os.path.exists(zipped) else "not built"
            print(f"| {function} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} "
                  f"| {args.runs} | {size} |")
    finally:
        os.killpg(emulator.pid, 15)


if __name__ == "__main__":
    main()
