# syntax=docker/dockerfile:1
#
# One small static image per Tapline binary, built from the repository root:
#
#   docker build --build-arg STAGE=decap      -t tapline/decap .
#   docker build --build-arg STAGE=reassemble -t tapline/reassemble .
#   docker build --build-arg STAGE=replay     -t tapline/replay .
#   docker build --build-arg STAGE=archive    -t tapline/archive .
#   docker build --build-arg STAGE=tapline    -t tapline/tapline .   # the all-in-one
#
# (`docker compose build` builds them all, see compose.yaml.) Every image
# runs its binary as /stage; `/stage healthcheck` probes its own /healthz,
# since the distroless base has no shell and no curl.
#
# allinone/deploy_test.go runs the build step below for every STAGE and
# checks the binaries are static (CGO off) and built with -trimpath.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY . .
ARG STAGE=tapline
ARG OUT=/out
RUN --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=cache,target=/go/pkg/mod \
    set -eu; \
    case "$STAGE" in \
      tapline) pkg=./allinone/cmd/tapline ;; \
      decap|reassemble|replay|archive) pkg=./$STAGE/cmd/$STAGE ;; \
      *) echo "STAGE must be decap, reassemble, replay, archive or tapline, not '$STAGE'" >&2; exit 1 ;; \
    esac; \
    mkdir -p "$OUT/data"; \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$OUT/stage" "$pkg"

# distroless/static: no libc, no shell; CA certificates and tzdata included
# (S3 over TLS), user nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/stage /stage
# A writable working directory: the all-in-one keeps ./.tapline/nats and
# ./archive-data here (mount a volume on /data to keep them).
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
ENTRYPOINT ["/stage"]
