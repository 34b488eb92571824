# ecs-vnc-controller: a static (musl) binary in an image of its own, FROM scratch.
#   docker build -t ecs-vnc-controller:0.1.0 .
#
# Without Docker, scripts/image builds the same image (same files, user, entrypoint, port) with
# umoci into target/image/ecs-vnc-controller.oci.tar; tests/image.rs checks that this file and that
# image agree. The image holds exactly:
#   /ecs-vnc-controller                  the static binary (x86_64-unknown-linux-musl)
#   /etc/ssl/certs/ca-certificates.crt   Debian's CA bundle (rustls reads the system roots there)
#   /etc/passwd, /etc/group              the one user nonroot, 65532:65532 (image/rootfs/etc/)
# No shell, no package manager, no time zone database (jiff bundles its own, see Cargo.toml).
#
# Builder: Debian bookworm with the Rust toolchain. ring (the only C in the dependency tree, used
# by rustls) is compiled with musl-gcc from musl-tools.
FROM rust:1-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
# Named explicitly so ring's build script never falls back to the glibc gcc.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# --locked: build exactly the dependency versions of Cargo.lock.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin ecs-vnc-controller \
    && cp target/x86_64-unknown-linux-musl/release/ecs-vnc-controller /ecs-vnc-controller

FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY image/rootfs/etc/passwd /etc/passwd
COPY image/rootfs/etc/group /etc/group
COPY --from=builder /ecs-vnc-controller /ecs-vnc-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/ecs-vnc-controller"]
CMD ["run"]
