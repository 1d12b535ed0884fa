"""moto's server with one request handled at a time.

DynamoDB applies each request atomically: an `ADD` is never lost and a
transaction's items change together. moto's backends are plain Python with no
locks, and `moto_server` serves every connection on its own thread, so two
concurrent `TransactWriteItems` on one item can lose an update (moto restores
a whole-table copy when a transaction fails, and its `ADD` is a read, then a
write). Serialising the requests gives the emulator DynamoDB's per-request
atomicity; the interleaving *between* requests, which the store must handle,
is untouched. Connections still get their own threads (HTTP/1.1 keep-alive).

Usage: python .ci/moto_serial.py PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

moto = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serial(environ, start_response):
    with one_at_a_time:
        # Drain the body inside the lock: moto may build it lazily.
        return [b"".join(moto(environ, start_response))]


if __name__ == "__main__":
    run_simple(
        "127.0.0.1",
        int(sys.argv[1]),
        serial,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
