#!/bin/sh
# The A/B acceptance of `cargo ktstr stats compare` (too long for the default
# suite: about 25 VM runs of `steady`). Run from the workspace root with
# cargo-ktstr on PATH (`cargo install --path facade/cargo-ktstr`):
#   1. scx-ktstr against scx-ktstr --slow --slow-us 10000: must exit 1
#      (a regression in work done);
#   2. scx-ktstr against itself: 20 stored runs, then 10 comparisons of
#      5 against 5 different runs each: every one must exit 0.
# Each long part holds the shared heavy-job lock (/tmp/ktstr-heavy.lock).
set -u
T="-p ktstr-tests --test scx_ktstr --test-name steady_under_scx_ktstr"
LOCK=/tmp/ktstr-heavy.lock

echo "== 1. scx-ktstr vs scx-ktstr --slow --slow-us 10000 (5 runs a side)"
flock "$LOCK" cargo ktstr stats compare $T --reps 5 \
    --a scheduler:scx-ktstr --b 'scheduler:scx-ktstr --slow --slow-us 10000'
slow=$?
echo "exit status: $slow (1 expected: a regression)"

echo "== 2. scx-ktstr vs itself: 20 runs"
flock "$LOCK" cargo ktstr stats compare $T --reps 10 \
    --a scheduler:scx-ktstr --b scheduler:scx-ktstr
# The runs just made: their ids end in -a<i> or -b<i>; take the newest 20.
runs=$(cargo ktstr stats list | awk 'NR > 1 && $1 ~ /-[ab][0-9]+$/ {print $1}' | tail -20)
set -- $runs
if [ $# -lt 20 ]; then echo "only $# runs stored"; exit 2; fi
i=0; zero=0
for shift_by in 0 1 2 3 4 5 6 7 8 9; do
    # A different split of the 20 runs each time: rotate, take 5 and the next 5.
    rot=$(echo $runs | tr ' ' '\n' | awk -v s=$shift_by -v n=20 '{a[NR-1]=$0} END {for (k=0;k<n;k++) print a[(k*7+s)%n]}')
    a=$(echo "$rot" | sed -n 1,5p | paste -sd,)
    b=$(echo "$rot" | sed -n 6,10p | paste -sd,)
    cargo ktstr stats compare --test-name steady_under_scx_ktstr --a "run:$a" --b "run:$b" > /tmp/ab-self-$i.txt 2>&1
    st=$?
    echo "comparison $i: exit $st"
    [ $st -eq 0 ] && zero=$((zero + 1))
    i=$((i + 1))
done
echo "self vs self: $zero of 10 comparisons exited 0"
[ "$slow" -eq 1 ] && [ "$zero" -eq 10 ]
