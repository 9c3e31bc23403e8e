# deploy/images/moectl.Dockerfile - moemesh/moectl (deploy/images.sh builds it;
# context: the repository root, filtered by .containerignore).
# Ports: none (a CLI), as k8s/base uses them.
# Runs as uid/gid 10001 (k8s/base runAsUser/runAsGroup) with a read-only root
# filesystem: the binary writes nothing but stdout/stderr; the model is mounted
# at /models (read-only), secrets under /etc/moemesh.

# ---- build: the same stage text in every service's Dockerfile, so buildah's
# layer cache compiles the binaries once for all of them; only what the four
# binaries are made from (an edit elsewhere keeps the cache)
FROM localhost/moemesh-build:bookworm AS build
WORKDIR /src
COPY Makefile ./
COPY proto proto/
COPY libmoe libmoe/
COPY libsvc libsvc/
COPY libmesh libmesh/
COPY tools tools/
COPY expert-worker expert-worker/
COPY router-svc router-svc/
COPY gateway gateway/
RUN make -j2 build/moectl build/expert-worker build/router-svc build/gateway

# ---- runtime: the base plus only the shared libraries the binaries link
# (readelf -d NEEDED -> dpkg -S); one list for every service, so the layer is
# shared too
FROM localhost/moemesh-base:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc29 libprotobuf-c1 libhiredis0.14 libmicrohttpd12 libcjson1 libssl3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
 && groupadd -g 10001 moemesh \
 && useradd -u 10001 -g 10001 -M -d /nonexistent -s /usr/sbin/nologin moemesh
COPY --from=build /src/build/moectl /usr/local/bin/moectl
RUN ["/usr/local/bin/moectl", "--help"]
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/moectl"]
