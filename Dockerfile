# ecs-vnc-controller: a static (musl) binary on distroless.
#   docker build -t ecs-vnc-controller:0.1.0 .
#
# Builder: Debian bookworm with the Rust toolchain. ring (the only C in the dependency tree, used
# by rustls) is compiled with musl-gcc from musl-tools.
FROM rust:1-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
# Named explicitly so ring's build script never falls back to the glibc gcc.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# --locked: build exactly the dependency versions of Cargo.lock.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin ecs-vnc-controller \
    && cp target/x86_64-unknown-linux-musl/release/ecs-vnc-controller /ecs-vnc-controller

# Runtime: no shell, no package manager; CA certificates (for the ECS API and the Kubernetes API
# over TLS) and a nonroot user (65532) included.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /ecs-vnc-controller /ecs-vnc-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/ecs-vnc-controller"]
CMD ["run"]
