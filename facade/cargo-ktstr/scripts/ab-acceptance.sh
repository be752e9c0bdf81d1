#!/bin/sh
# The A/B acceptance of `cargo ktstr stats compare` (too long for the default
# suite: 16 VM runs of `steady`). Run from the workspace root with
# cargo-ktstr on PATH (`cargo install --path facade/cargo-ktstr`):
#   1. scx-ktstr against scx-ktstr --slow --slow-us 10000, 5 runs a side:
#      must exit 1 (a regression in work done);
#   2. scx-ktstr against itself: 10 comparisons, each of 5 against 5 other
#      runs drawn from the newest 11 plain scx-ktstr runs (the 5 of part 1
#      and 6 more): every one must exit 0.
# The runs are made one A/B pair at a time (a short job: two VMs of about
# 15 s, which the host's VM slots queue behind other VMs), and compared
# afterwards from the store (`run:` sides).
# N1 and N2 set how many pairs each part makes (default 5 and 3; fewer when
# earlier runs are already stored). The comparisons name the figure of work
# done, cpu_share_pct (FIG=...; FIG= with nothing compares every figure,
# with alpha shared among them).
set -u
T="-p ktstr-tests --test scx_ktstr --test-name steady_under_scx_ktstr"
SLOW='scheduler:scx-ktstr --slow --slow-us 10000'
FIG=${FIG-cpu_share_pct}
FIGS=""
for f in $FIG; do FIGS="$FIGS --figure $f"; done
i=0
while [ $i -lt "${N1:-5}" ]; do
    cargo ktstr stats compare $T --reps 1 --a scheduler:scx-ktstr --b "$SLOW" >/dev/null
    i=$((i + 1))
done
i=0
while [ $i -lt "${N2:-3}" ]; do
    cargo ktstr stats compare $T --reps 1 --a scheduler:scx-ktstr --b scheduler:scx-ktstr >/dev/null
    i=$((i + 1))
done
# Runs made by compare sides end in -a<i> or -b<i>.
list=$(cargo ktstr stats list | awk 'NR > 1 && $1 ~ /-[ab][0-9]+$/ && /scx_ktstr/')
slow_runs=$(echo "$list" | grep -- '--slow' | awk '{print $1}' | tail -5 | paste -sd,)
plain=$(echo "$list" | grep -v -- '--slow' | awk '{print $1}' | tail -11)
echo "== 1. scx-ktstr (A) vs scx-ktstr --slow --slow-us 10000 (B)"
cargo ktstr stats compare --test-name steady_under_scx_ktstr $FIGS \
    --a "run:$(echo "$plain" | head -5 | paste -sd,)" --b "run:$slow_runs"
slow=$?
echo "exit status: $slow (1 expected: a regression)"
set -- $plain
n=$#
if [ $n -lt 10 ]; then echo "only $n plain runs stored"; exit 2; fi
echo "== 2. scx-ktstr vs itself, 10 comparisons of 5 against 5 of $n runs"
zero=0
for s in 0 1 2 3 4 5 6 7 8 9; do
    # A different split each time: a stride-3 permutation shifted by s.
    rot=$(echo $plain | tr ' ' '\n' | awk -v s=$s -v n=$n '{a[NR-1]=$0} END {for (k=0;k<n;k++) print a[(k*3+s)%n]}')
    a=$(echo "$rot" | sed -n 1,5p | paste -sd,)
    b=$(echo "$rot" | sed -n 6,10p | paste -sd,)
    cargo ktstr stats compare --test-name steady_under_scx_ktstr $FIGS --a "run:$a" --b "run:$b" > /tmp/ab-self-$s.txt 2>&1
    st=$?
    echo "comparison $s: exit $st ($(grep -E '^(cpu_share|work_per)' /tmp/ab-self-$s.txt | tr -s ' ' | paste -sd';'))"
    [ $st -eq 0 ] && zero=$((zero + 1))
done
echo "self vs self: $zero of 10 comparisons exited 0"
[ "$slow" -eq 1 ] && [ "$zero" -eq 10 ]
