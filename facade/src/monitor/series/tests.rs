use std::time::Duration;

use super::*;
use crate::monitor::{BridgeStats, CpuSample, DsqSample, Global, SnapshotBridge};

fn sample(kind: SampleKind, ms: u64, dispatched: Option<u64>, nr: u32) -> Sample {
    Sample {
        kind,
        elapsed: Duration::from_millis(ms),
        paused: Some(Duration::from_millis(3)),
        read_time: Duration::from_millis(1),
        cpus: Ok(vec![CpuSample {
            cpu: 1,
            nr_running: Some(nr),
            clock: Some(ms * 1_000_000),
            scx_nr_running: Some(nr),
            nr_switches: Some(0),
            local_dsq_nr: Some(0),
            curr_pid: Some(1),
            curr_comm: Some("init".into()),
            oldest_wait_ns: Some(500),
            schedstat: Some(crate::monitor::Schedstat {
                sched_count: ms * 3,
                ..Default::default()
            }),
        }]),
        scheduler: Ok(Some("ktstr".into())),
        dsqs: Ok(vec![DsqSample {
            id: 0,
            nr,
            oldest_wait_ns: Some(u64::from(nr) * 1000),
        }]),
        events: Ok(vec![("SCX_EV_SELECT_CPU_FALLBACK".into(), 7)]),
        globals: match dispatched {
            Some(v) => Ok(vec![Global {
                name: "nr_dispatched".into(),
                map: "ktstr_bpf.bss".into(),
                map_id: 4,
                type_name: "u64".into(),
                bytes: v.to_le_bytes().to_vec(),
            }]),
            None => Err(MonitorError::Read("map gone".into())),
        },
    }
}

fn bridge() -> SnapshotBridge {
    SnapshotBridge::new(
        vec![
            sample(SampleKind::Periodic, 300, Some(0), 1),
            sample(SampleKind::Named("spin".into()), 200, Some(5), 4),
            sample(SampleKind::Periodic, 100, None, 2),
            sample(SampleKind::Periodic, 400, Some(9), 3),
        ],
        3,
    )
}

#[test]
fn the_spec_question_reads_one_slot_per_periodic_snapshot() {
    let b = bridge();
    let drained = b.drain_ordered_with_stats();
    assert_eq!(
        drained.stats,
        BridgeStats {
            periodic_target: 3,
            periodic_fired: 3,
            on_demand: 1,
            with_errors: 1,
            pauses: vec![Duration::from_millis(3); 4],
        }
    );
    let series = SampleSeries::from_drained_typed(drained, MonitorLog::default()).periodic_only();
    assert_eq!(series.len(), 3);
    let d = series.bpf("nr_dispatched", |s| s.var("nr_dispatched").as_u64());
    let slots: Vec<String> = d
        .iter_full()
        .map(|(k, t, v)| format!("{k}@{}:{v:?}", t.as_millis()))
        .collect();
    assert_eq!(slots[1], "periodic@300:Ok(0)");
    assert!(slots[0].starts_with("periodic@100:Err(Read"), "{slots:?}");
    assert!(d.iter_full().any(|(_, _, s)| matches!(s, Ok(v) if *v > 0)));
    assert!(d.only_grew());
    assert_eq!((d.max(), d.min(), d.last()), (Some(&9), Some(&0), Some(&9)));
    // Drained: the bridge is empty now, its counts stay.
    assert!(b.drain_ordered_with_stats().snapshots.is_empty());
    assert_eq!(b.stats().median_pause(), Some(Duration::from_millis(3)));
}

#[test]
fn one_line_questions() {
    let series =
        SampleSeries::from_drained_typed(bridge().ordered_with_stats(), MonitorLog::default());
    let nr: Vec<u32> = series.nr_running(1).values().copied().collect();
    assert_eq!(nr, [2, 4, 1, 3]);
    assert_eq!(
        series.deepest_dsq(),
        Some((0, 4, Duration::from_millis(200)))
    );
    assert_eq!(series.oldest_wait(), Some(Duration::from_nanos(4000)));
    assert_eq!(
        series.named("spin").map(|s| s.elapsed.as_millis()),
        Some(200)
    );
    assert!(series.event("SCX_EV_SELECT_CPU_FALLBACK").only_grew());
    assert!(matches!(
        series.nr_running(5).iter_full().next().map(|p| p.2),
        Some(Err(MonitorError::Missing(_)))
    ));
    let missing = series
        .iter()
        .next()
        .expect("a sample")
        .var("nr_nothing")
        .as_u64();
    // The first sample could not read the maps: that error, not "no such var".
    assert!(
        matches!(&missing, Err(MonitorError::Read(_))),
        "{missing:?}"
    );
    let present = series.iter().nth(1).expect("a sample");
    let e = present.var("nr_nothing").as_u64().expect_err("absent");
    assert!(e.to_string().contains("ktstr_bpf.bss"), "{e}");
    let g = Global {
        name: "x".into(),
        map: "m".into(),
        map_id: 1,
        type_name: "s8".into(),
        bytes: vec![0xff],
    };
    assert_eq!(g.as_i64(), Ok(-1));
    let big = Global {
        bytes: vec![0; 16],
        type_name: "char [16]".into(),
        ..g
    };
    assert!(matches!(big.as_u64(), Err(MonitorError::NotInteger { .. })));
    assert!(
        present.summary().contains("nr_dispatched=5"),
        "{}",
        present.summary()
    );
}

#[test]
fn schedstat_rates_are_per_second_of_guest_time() {
    let series = SampleSeries::from_drained_typed(
        DrainedSnapshots {
            snapshots: vec![
                sample(SampleKind::Periodic, 1000, Some(1), 1),
                sample(SampleKind::Periodic, 1500, Some(1), 1),
                sample(SampleKind::Periodic, 2500, Some(1), 1),
            ],
            stats: BridgeStats::default(),
        },
        MonitorLog::default(),
    );
    // sched_count = 3 per guest ms: 3000 per guest second.
    let rate = series.schedstat_rate("sched_count", 1, |s| s.sched_count);
    assert_eq!(
        rate.values().copied().collect::<Vec<f64>>(),
        [3000.0, 3000.0]
    );
    assert!(rate.iter_full().next().is_some_and(|p| p.2.is_err()));
    assert_eq!(rate.label(), "cpu1 sched_count/s");
    let total = series.schedstat("sched_count", 1, |s| s.sched_count);
    assert_eq!(total.last(), Some(&7500));
    assert!(
        series
            .schedstat_rate("x", 5, |s| s.pcount)
            .values()
            .next()
            .is_none()
    );
}
