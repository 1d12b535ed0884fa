# syntax=docker/dockerfile:1
# The all-routes server (functions/server) as a small, non-root image.
#
# Stages: cargo-chef computes the dependency recipe, builds the dependencies
# alone (a layer reused until Cargo.lock or a manifest changes), then the
# workspace. The binary is linked statically, so the runtime image is
# distroless/static: no shell, no package manager, no build tools.

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# Static glibc: the binary needs nothing from the runtime image.
ENV RUSTFLAGS="-C target-feature=+crt-static"
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked -p server --target "$(uname -m)-unknown-linux-gnu" --recipe-path recipe.json
COPY . .
# The build. .ci/run runs this very line (and the RUSTFLAGS above) outside Docker.
RUN cargo build --release --locked -p server --target "$(uname -m)-unknown-linux-gnu"
RUN cp "target/$(uname -m)-unknown-linux-gnu/release/server" /server

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /server /usr/local/bin/server
# The default SQLite file (sqlite://chat.db) lands in the nonroot user's home.
WORKDIR /home/nonroot
ENV PORT=8000
EXPOSE 8000
# distroless's nonroot user, by number so that any runtime can check it is not root.
USER 65532:65532
# Exec form: the server is PID 1 and gets SIGTERM itself, then drains
# in-flight requests and running generations before it exits.
ENTRYPOINT ["/usr/local/bin/server"]
