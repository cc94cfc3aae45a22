//! Lost events: the tracer is stopped (SIGSTOP) while a relay opens thousands of connections,
//! some leaking, and churns thousands more, so the kernel side's ring buffer overflows. Once
//! resumed, the tracer must say that events were lost (JSON, log) and re-sync: the open
//! connections and every leak verdict exact again, from the kernel map and the socket table.

use std::time::Duration;

use tracer_e2e::{
    prerequisites_met,
    soak::{self, Plan},
};

#[test]
fn after_a_ring_buffer_overflow_the_table_resyncs_and_the_loss_is_reported() {
    if !prerequisites_met() {
        return;
    }
    let plan = Plan {
        port: 18421,
        hold: 6_000,
        unread: 400,
        close_wait: 200,
        rate: 4_000,
        churn: Duration::from_secs(8),
        pause_tracer: true,
    };
    let report = soak::run(&plan);
    report.assert_exact_throughout();
    let last = report.points.last().expect("snapshots");
    assert!(
        last.events_lost > 0,
        "the ring buffer never overflowed ({} events sent): this test proves nothing then",
        last.events_sent
    );
    assert_eq!(last.open, u64::from(plan.hold), "{}", report.final_summary);
    assert!(
        report
            .tracer_warnings
            .iter()
            .any(|l| l.contains("kernel events lost")),
        "the loss was not logged; tracer stderr lines kept: {:?}",
        report.tracer_warnings
    );
}
