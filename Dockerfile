# syntax=docker/dockerfile:1
#
# XSIAM Case Archiver, the image Cloud Run runs (deploy/README.md, deploy/cloudrun/service.yaml).
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t IMAGE .
#   gcloud builds submit --tag IMAGE .          (Cloud Build; no local container engine needed)
#
# Rules, checked by deploy/dockerfile_test.go: two stages; a static binary (CGO_ENABLED=0, -trimpath,
# -s -w, version stamped); the final image is distroless static, runs as nonroot, has no shell and
# nothing secret in ENV or ARG. Secrets reach the container only at run time, as Secret Manager
# volumes (*_FILE variables). deploy/build-static.sh runs the `go build` line below, exactly as
# written here, and checks the result is static: keep that command on one RUN line.

# The builder runs on the build host's platform and cross-compiles for the target platform
# (BuildKit sets TARGETOS/TARGETARCH; an empty value means the builder's own), so
# `docker build --platform linux/amd64` on an arm64 laptop needs no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so that the module download layer is cached across source changes.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION is not secret: it is the release tag, printed by `server -version` and recorded in every
# manifest.json as tool_version.
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# openapi.yaml needs no COPY into the final image: the root package casearchiver embeds it
# (//go:embed in openapi.go) and the binary serves it at /openapi.yaml.
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/server ./cmd/server

# distroless static: CA certificates, tzdata and /etc/passwd with the nonroot user (65532); no shell,
# no package manager, no libc (the binary is static).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/server /server
USER nonroot
# Cloud Run sets PORT (8080 unless the service says otherwise); the server listens on it, all
# interfaces.
EXPOSE 8080
ENTRYPOINT ["/server"]
