#!/bin/sh
# The short multi-host test (make test): every service on its own host in a
# network namespace (tests/cluster/lib.sh), two faults while streams run
# through the gateway: w1's link cut (every stream completes on w2) and the
# leading router-svc killed (the standby leads). The full set (bandwidth
# throttle, Redis partition, longer faults, more streams) is
# `make test-cluster` (tests/cluster/faults.sh). Skips (77) when not root or
# without network namespaces; removes its namespaces, veths, bridge and
# blackhole route even when it fails.
exec env FAULTS="${FAULTS:-link leader}" K="${K:-2}" GEN="${GEN:-100}" FAULT_S="${FAULT_S:-3}" \
    sh "$(dirname "$0")/../cluster/faults.sh"
