# syntax=docker/dockerfile:1
# dualstack-ingress container image: the release binary on a distroless base, running as uid 65532.
#
#   docker build -t REGISTRY/dualstack-ingress:0.1.0 .
#
# Any OCI builder that reads Dockerfiles works the same (podman build, buildah bud, kaniko).

FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the binary is built from (see .dockerignore): the manifest and lockfile, the sources, the
# embedded default configuration, and the benches and example the manifest declares.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
COPY examples ./examples
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/dualstack-ingress /out/dualstack-ingress

# glibc, libgcc and CA certificates, no shell; the :nonroot tag runs as 65532:65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/dualstack-ingress /usr/local/bin/dualstack-ingress
USER 65532:65532
# http, https, admin (/healthz /readyz /metrics): all above 1024, so no capability is needed.
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/dualstack-ingress"]
