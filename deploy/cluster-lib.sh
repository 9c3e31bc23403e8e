# deploy/cluster-lib.sh - how a moemesh cluster is put together, sourced by
# `make run`'s launcher (deploy/cluster.sh, every service on loopback) and by
# the multi-host tests (tests/cluster/lib.sh, every service on a host of its
# own): one recipe for the certificates, the Redis ACL users, each service's
# command line and the demo tenant, so the tests run what users run.
#
# The caller sets:
#   CL_BIN    the binaries (absolute)     CL_MODEL  the GGUF file (absolute)
#   CL_CERTS  certificates directory      CL_RDIR   Redis directory (ACL file,
#   CL_P      the key prefix                         passwords/, data/)
#   CL_REDIS  host:port the services reach Redis at
#   CL_TLS    1: mutual TLS between gateway and workers; else plaintext
#   CL_DAYS   certificate lifetime (days)
#   CL_SPAWN  a command run as `$CL_SPAWN NAME CMD...` that starts a service
#             in the background (the caller decides where it runs and logs)
#   CL_RUN    a prefix for short commands that must reach Redis (empty: run
#             here; the tests: `mh_in redis`)
# Paths must not hold spaces (the flags are built as words).

# cl_fresh NAME: NAME's certificate exists, is valid one more day and, but
# for the CA, is signed by the CA
cl_fresh() {
    [ -s "$CL_CERTS/$1.pem" ] && [ -s "$CL_CERTS/$1.key" ] &&
        openssl x509 -checkend 86400 -noout -in "$CL_CERTS/$1.pem" >/dev/null 2>&1 &&
        { [ "$1" = ca ] || openssl verify -CAfile "$CL_CERTS/ca.pem" "$CL_CERTS/$1.pem" >/dev/null 2>&1; }
}

# cl_certs NAME...: a throwaway CA (EC P-256) and a certificate per NAME
# (CN and DNS SAN NAME: a worker's id is the name its certificate carries;
# server and client use), each made only when missing, due within a day or
# not from the CA (a new CA remakes all). Says what it made. 0 or 1.
cl_certs() (
    umask 077
    mkdir -p "$CL_CERTS" && cd "$CL_CERTS" || exit 1
    if ! cl_fresh ca; then
        echo "   a new CA (EC P-256, $CL_DAYS days)"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -subj "/CN=moemesh CA" -days "$CL_DAYS" -out ca.pem 2>/dev/null || exit 1
        for c in "$@"; do rm -f "$c.pem"; done
    fi
    for c in "$@"; do
        cl_fresh "$c" && continue
        echo "   a certificate for $c (DNS:$c)"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$c.key" \
            -subj "/CN=$c" -out "$c.csr" 2>/dev/null &&
            printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$c" >"$c.ext" &&
            openssl x509 -req -in "$c.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$CL_DAYS" \
                -extfile "$c.ext" -out "$c.pem" 2>/dev/null || exit 1
        rm -f "$c.csr" "$c.ext"
    done
)

# cl_tls NAME: NAME's TLS flags (or --insecure without CL_TLS)
cl_tls() {
    if [ "$CL_TLS" = 1 ]; then echo "--tls-cert $CL_CERTS/$1.pem --tls-key $CL_CERTS/$1.key --tls-ca $CL_CERTS/ca.pem"
    else echo "--insecure"; fi
}

# cl_redis_acl: the ACL file (default user off; a user per role, with only
# the commands and keys it needs: moectl redis-acl) and the passwords, made
# once and reused. Extra lines for the ACL file on stdin are appended.
cl_redis_acl() {
    mkdir -p "$CL_RDIR/data" || return 1
    (umask 077 && "$CL_BIN/moectl" redis-acl --prefix "$CL_P" --password-dir "$CL_RDIR/passwords" \
        --aclfile >"$CL_RDIR/users.acl")
}

# cl_user ROLE: the flags that log a service in as ROLE (router, worker,
# gateway, admin): the user goes in the URL, the password in a file
cl_user() {
    echo "--redis redis://$CL_P-$1@$CL_REDIS --redis-password-file $CL_RDIR/passwords/$CL_P-$1 --prefix $CL_P"
}

# cl_start_redis NAME PORT BIND [ARG...]: redis-server with the ACL file, no
# persistence, in the foreground (the spawner backgrounds it)
cl_start_redis() {
    cl_n=$1 cl_port=$2 cl_bind=$3
    shift 3
    $CL_SPAWN "$cl_n" redis-server --port "$cl_port" --bind "$cl_bind" --save "" --appendonly no \
        --dir "$CL_RDIR/data" --aclfile "$CL_RDIR/users.acl" --daemonize no "$@"
}

# cl_start_router NAME LISTEN [ARG...]: router-svc keeping every expert on
# two workers (either may fail)
cl_start_router() {
    cl_n=$1 cl_listen=$2
    shift 2
    # shellcheck disable=SC2046 # cl_user's flags are words
    $CL_SPAWN "$cl_n" "$CL_BIN/router-svc" $(cl_user router) --listen "$cl_listen" \
        --min-replicas 2 --headroom 0 --settle-ms 500 --log-format text "$@"
}

# cl_start_worker NAME ZONE LISTEN [ARG...]: expert-worker NAME (its worker id
# and certificate) in failure domain ZONE
cl_start_worker() {
    cl_n=$1 cl_zone=$2 cl_listen=$3
    shift 3
    # shellcheck disable=SC2046
    $CL_SPAWN "$cl_n" "$CL_BIN/expert-worker" --model "$CL_MODEL" --listen "$cl_listen" $(cl_user worker) \
        --worker-id "$cl_n" --failure-domain "$cl_zone" --drain-ms 0 $(cl_tls "$cl_n") --log-format text "$@"
}

# cl_start_gateway NAME LISTEN [ARG...]: the gateway, experts where router-svc
# places them, API keys from Redis
cl_start_gateway() {
    cl_n=$1 cl_listen=$2
    shift 2
    # shellcheck disable=SC2046
    $CL_SPAWN "$cl_n" "$CL_BIN/gateway" --model "$CL_MODEL" --listen "$cl_listen" $(cl_user gateway) \
        --tenants redis $(cl_tls gateway) --log-format text "$@"
}

# cl_tenant_add NAME [KEYFILE]: adds tenant NAME and prints its API key; with
# KEYFILE holding a key, adds that key again (read from stdin, never argv),
# else a new key is made (and written to KEYFILE, mode 0600, if given). The
# key on stdout; 1 (with moectl's words on stderr) on failure.
cl_tenant_add() {
    if [ -n "${2:-}" ] && [ -s "$2" ]; then
        # shellcheck disable=SC2046
        cl_out=$($CL_RUN "$CL_BIN/moectl" tenant add "$1" $(cl_user admin) --key-stdin <"$2" 2>&1) ||
            { echo "$cl_out" >&2; return 1; }
        cat "$2"
        return 0
    fi
    # shellcheck disable=SC2046
    cl_out=$($CL_RUN "$CL_BIN/moectl" tenant add "$1" $(cl_user admin) 2>&1) || { echo "$cl_out" >&2; return 1; }
    cl_k=$(echo "$cl_out" | sed -n 's/.*"key": "\(moe-[A-Za-z0-9_-]*\)".*/\1/p')
    [ -n "$cl_k" ] || { echo "moectl tenant add printed no key: $cl_out" >&2; return 1; }
    [ -n "${2:-}" ] && (umask 077 && echo "$cl_k" >"$2")
    echo "$cl_k"
}
