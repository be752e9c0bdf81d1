#!/bin/sh
# Proves scx-ktstr in one VM through `ktstr shell`, until #[ktstr_test] can:
# attach (state enabled, ops ktstr), counters growing, SIGTERM detaching
# cleanly, --crash-after ejecting with the scx_bpf_error message and
# --stall-after ejecting with SCX_EXIT_ERROR_STALL. Prints one PASS/FAIL line
# per check and exits non-zero if any failed. Needs a cached kernel
# (`cargo xtask kernel`) and QEMU; takes about a minute under TCG.
#   usage: tests/scx-ktstr/vm-check.sh        (honours CARGO_TARGET_DIR)
set -eu
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
cargo build -q -p ktstr-tests --bin scx-ktstr
cargo build -q -p ktstr --bin ktstr
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Each step prints "== name" first so the checks below can find its lines.
"$target/debug/ktstr" shell --topology 1n2l2c1t --timeout-s 180 \
	--include "$target/debug/scx-ktstr" --exec '
echo "== attach"
scx-ktstr & p=$!
sleep 4
echo "state=$(cat /sys/kernel/sched_ext/state) ops=$(cat /sys/kernel/sched_ext/root/ops)"
kill $p; wait $p; echo "status=$?"
echo "state=$(cat /sys/kernel/sched_ext/state)"
echo "== crash"
scx-ktstr --crash-after 1 & p=$!; wait $p; echo "status=$?"
echo "state=$(cat /sys/kernel/sched_ext/state)"
echo "== stall"
scx-ktstr --stall-after 1 & p=$!; wait $p; echo "status=$?"
echo "state=$(cat /sys/kernel/sched_ext/state)"
echo "== end"' >"$log" 2>&1 || true
cat "$log"

# The lines of one step of the log.
step() { sed -n "/^== $1\$/,/^== /p" "$log"; }
failed=0
check() { # name, step, extended regexp that must match one of its lines
	if step "$2" | grep -Eq "$3"; then echo "PASS $1"; else echo "FAIL $1: no /$3/"; failed=1; fi
}
check "attaches" attach '^state=enabled ops=ktstr$'
check "prints the attach line" attach '^scx-ktstr: attached ops=ktstr timeout_ms=3000 pid=[0-9]+$'
check "counts dispatches" attach '^scx-ktstr: nr_enqueued=[1-9][0-9]* nr_dispatched=[1-9][0-9]*$'
check "SIGTERM detaches (kind)" attach '^scx-ktstr: exit kind=SCX_EXIT_UNREG code=64 exit_code=0$'
check "SIGTERM detaches (status)" attach '^status=0$'
check "SIGTERM detaches (state)" attach '^state=disabled$'
check "crash kind" crash '^scx-ktstr: exit kind=SCX_EXIT_ERROR_BPF code=1025 '
check "crash message" crash '^scx-ktstr: exit msg=scx-ktstr: crash requested \(nr_dispatched=[0-9]+\)$'
check "crash status" crash '^status=1$'
check "stall kind" stall '^scx-ktstr: exit kind=SCX_EXIT_ERROR_STALL code=1026 '
check "stall status" stall '^status=1$'
check "stall state" stall '^state=disabled$'
exit $failed
