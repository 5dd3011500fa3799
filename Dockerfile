# syntax=docker/dockerfile:1
#
# kstate's container image: a static binary on distroless, running as a non-root user.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#       --build-arg COMMIT="$(git rev-parse HEAD)" -t kstate .
#   docker run --rm kstate --help
#
# The build stage runs `make build`, the same command as a developer's build (the build context
# has no .git, so version and commit come in as build arguments). See docs/deploy.md.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION="${VERSION}" COMMIT="${COMMIT}"
# The data folder, owned by the runtime user: a volume created from the image inherits it.
RUN mkdir -p /out/var/lib/kstate

FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
ARG COMMIT=
LABEL org.opencontainers.image.title="kstate" \
      org.opencontainers.image.description="Stateful serverless runtime on Kafka (Cloudstate protocol 0.2)" \
      org.opencontainers.image.source="https://github.com/kstatehq/kstate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /src/bin/kstate /usr/local/bin/kstate
COPY --from=build --chown=65532:65532 /out/var/lib/kstate /var/lib/kstate
# nonroot (65532:65532) is distroless's unprivileged user; the Helm chart runs with the same ids.
USER 65532:65532
WORKDIR /var/lib/kstate
# 9000 (--listen): the user's services over gRPC and HTTP/JSON, reflection, health.
# 9001 (--peer-listen): node-to-node forwarding, never on the public port.
EXPOSE 9000 9001
# The node's Pebble store (--data-dir). Losing it is safe: a node restores what it owns from Kafka.
VOLUME ["/var/lib/kstate"]
ENTRYPOINT ["/usr/local/bin/kstate", "serve"]
# Arguments replace this default, so pass --data-dir=/var/lib/kstate again with your own flags.
CMD ["--data-dir=/var/lib/kstate"]
