# deploy/images/build.Dockerfile - localhost/moemesh-build:bookworm, the build
# stage every service image starts from: the local base (base.sh: debootstrap
# minbase, nothing pulled) plus the compilers and -dev packages the Makefile
# needs (the build subset of deploy/deps.sh). apt runs inside the container
# (podman build --network host): deb.debian.org is the one server it reaches.
FROM localhost/moemesh-base:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc make pkg-config libc6-dev libgrpc-dev libprotobuf-c-dev protobuf-c-compiler \
      libcjson-dev libhiredis-dev libmicrohttpd-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
