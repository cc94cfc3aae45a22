//! The verdict rules: which open upstream connection is leaked, and why.
//!
//! A Go HTTP/1.1 connection that is pooled or waiting for a response always has a goroutine
//! parked on it whose last read returned EAGAIN; a response body that nobody reads to EOF nor
//! closes leaves the socket in one of three shapes, checked in this order:
//! 1. the upstream closed (CLOSE_WAIT) and the process never closed its side;
//! 2. response bytes sit unread in the receive queue and nothing reads;
//! 3. ESTABLISHED, nothing unread, but the last read returned data and no read followed.

use std::time::Duration;

pub use super::leak::{Graces, LeakReason};
use super::{conn::UpstreamConn, tcp_state, unread_data};

fn held_for(since_ns: u64, now_ns: u64, grace: Duration) -> bool {
    u128::from(now_ns.saturating_sub(since_ns)) >= grace.as_nanos()
}

/// The verdict on one open connection at `now_ns`, with the precedence above.
pub fn judge(conn: &UpstreamConn, now_ns: u64, graces: &Graces) -> Option<LeakReason> {
    if !conn.is_open() {
        return None;
    }
    if conn.state == tcp_state::CLOSE_WAIT {
        if let Some(fin_ns) = conn.peer_fin_ns {
            if held_for(fin_ns, now_ns, graces.close_wait) {
                return Some(LeakReason::CloseWait);
            }
        }
    }
    // A thread blocked in a read syscall on the socket is listening, however quiet it is.
    if conn.reads_inflight > 0 {
        return None;
    }
    let idle_since = conn.last_activity_ns();
    if conn.unread_bytes() > 0 && held_for(idle_since, now_ns, graces.unread) {
        return Some(LeakReason::Unread);
    }
    let last_read_returned_data = conn.last_read_ret.is_some_and(|ret| ret > 0);
    if conn.state == tcp_state::ESTABLISHED
        && conn.unread_bytes() == 0
        && last_read_returned_data
        && held_for(idle_since, now_ns, graces.abandon)
    {
        return Some(LeakReason::Abandoned);
    }
    None
}

/// How a connection ended, as far as `closed_unread` cares.
#[derive(Clone, Copy, Debug)]
pub struct Ending {
    /// `rcv_nxt - copied_seq` when it reached TCP_CLOSE.
    pub recv_q: u32,
    pub state_before: u32,
    pub closed_by_process: bool,
    /// The upstream's FIN had arrived by then.
    pub peer_fin: bool,
}

/// True when the process closed a connection before reading its response to the end: either
/// response bytes were still queued at close (the kernel discarded them and sent a reset), or
/// the connection ended from FIN_WAIT without the upstream's FIN: more response data arrived
/// after the close and the kernel aborted the connection for it.
pub fn closed_unread(end: Ending) -> bool {
    if !end.closed_by_process {
        return false;
    }
    let queued = unread_data(end.recv_q, end.state_before) > 0;
    let aborted_after_close = !end.peer_fin
        && matches!(
            end.state_before,
            tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2
        );
    queued || aborted_after_close
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conn::{Origin, UpstreamConn};

    const SEC: u64 = 1_000_000_000;

    fn established(now: u64) -> UpstreamConn {
        let mut c = UpstreamConn::for_test(Origin::Traced);
        c.state = tcp_state::ESTABLISHED;
        c.opened_ns = now;
        c.established_ns = Some(now);
        c
    }

    #[test]
    fn pooled_connection_whose_last_read_was_eagain_is_healthy_forever() {
        let mut c = established(0);
        c.last_read_ret = Some(-11);
        c.last_read_ns = Some(SEC);
        c.reads = 3;
        assert_eq!(judge(&c, 3600 * SEC, &Graces::default()), None);
    }

    #[test]
    fn close_wait_is_a_leak_only_after_its_grace() {
        let g = Graces::default();
        let mut c = established(0);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(10 * SEC);
        c.set_recv_q(1, 10 * SEC);
        assert_eq!(judge(&c, 15 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 15 * SEC, &g), Some(LeakReason::CloseWait));
    }

    #[test]
    fn close_wait_wins_over_unread() {
        let mut c = established(0);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(0);
        c.set_recv_q(5000, 0);
        assert_eq!(
            judge(&c, 60 * SEC, &Graces::default()),
            Some(LeakReason::CloseWait)
        );
    }

    #[test]
    fn close_wait_inside_its_grace_can_still_be_unread() {
        let g = Graces {
            close_wait: Duration::from_secs(100),
            ..Graces::default()
        };
        let mut c = established(0);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(50 * SEC);
        c.set_recv_q(5001, 50 * SEC);
        assert_eq!(judge(&c, 60 * SEC, &g), Some(LeakReason::Unread));
    }

    #[test]
    fn a_lone_unread_fin_is_not_unread_data() {
        let g = Graces {
            close_wait: Duration::from_secs(100),
            ..Graces::default()
        };
        let mut c = established(0);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(50 * SEC);
        c.set_recv_q(1, 50 * SEC);
        c.last_read_ret = Some(-11);
        assert_eq!(judge(&c, 60 * SEC, &g), None);
    }

    #[test]
    fn unread_bytes_become_a_leak_at_the_unread_grace_since_the_last_read() {
        let g = Graces::default();
        let mut c = established(0);
        c.last_read_ret = Some(4096);
        c.last_read_ns = Some(2 * SEC);
        c.set_recv_q(130_048, 3 * SEC);
        assert_eq!(judge(&c, 12 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 12 * SEC, &g), Some(LeakReason::Unread));
    }

    #[test]
    fn unread_never_read_counts_idle_from_establishment() {
        let mut c = established(5 * SEC);
        c.set_recv_q(10, 6 * SEC);
        assert_eq!(judge(&c, 15 * SEC - 1, &Graces::default()), None);
        assert_eq!(
            judge(&c, 15 * SEC, &Graces::default()),
            Some(LeakReason::Unread)
        );
    }

    #[test]
    fn abandoned_needs_data_as_the_last_read_and_the_abandon_grace() {
        let g = Graces::default();
        let mut c = established(0);
        c.last_read_ret = Some(295);
        c.last_read_ns = Some(SEC);
        c.set_recv_q(0, SEC);
        assert_eq!(judge(&c, 31 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 31 * SEC, &g), Some(LeakReason::Abandoned));
        c.last_read_ret = Some(0);
        assert_eq!(judge(&c, 31 * SEC, &g), None, "EOF is not data");
        c.last_read_ret = Some(-104);
        assert_eq!(judge(&c, 31 * SEC, &g), None, "an error is not data");
    }

    #[test]
    fn a_reader_blocked_in_the_kernel_is_listening() {
        let mut c = established(0);
        c.last_read_ret = Some(100);
        c.last_read_ns = Some(SEC);
        c.reads_inflight = 1;
        assert_eq!(judge(&c, 3600 * SEC, &Graces::default()), None);
        c.set_recv_q(50, SEC);
        assert_eq!(judge(&c, 3600 * SEC, &Graces::default()), None);
    }

    #[test]
    fn connections_the_process_closed_are_never_leaks() {
        let mut c = established(0);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(0);
        c.local_close_ns = Some(SEC);
        assert_eq!(judge(&c, 3600 * SEC, &Graces::default()), None);
        let mut c = established(0);
        c.state = tcp_state::FIN_WAIT2;
        c.last_read_ret = Some(10);
        assert_eq!(judge(&c, 3600 * SEC, &Graces::default()), None);
    }

    #[test]
    fn connecting_sockets_are_not_judged() {
        let mut c = established(0);
        c.state = tcp_state::SYN_SENT;
        c.established_ns = None;
        assert_eq!(judge(&c, 3600 * SEC, &Graces::default()), None);
    }

    fn ending(recv_q: u32, state_before: u32, closed_by_process: bool, peer_fin: bool) -> Ending {
        Ending {
            recv_q,
            state_before,
            closed_by_process,
            peer_fin,
        }
    }

    #[test]
    fn closed_unread_needs_data_beyond_the_fin_and_a_local_close() {
        assert!(closed_unread(ending(
            130_048,
            tcp_state::ESTABLISHED,
            true,
            false
        )));
        assert!(!closed_unread(ending(
            130_048,
            tcp_state::ESTABLISHED,
            false,
            false
        )));
        assert!(!closed_unread(ending(
            0,
            tcp_state::ESTABLISHED,
            true,
            false
        )));
        assert!(!closed_unread(ending(1, tcp_state::CLOSE_WAIT, true, true)));
        assert!(closed_unread(ending(2, tcp_state::CLOSE_WAIT, true, true)));
    }

    #[test]
    fn ending_from_fin_wait_without_the_upstreams_fin_means_the_response_kept_coming() {
        assert!(closed_unread(ending(0, tcp_state::FIN_WAIT1, true, false)));
        assert!(closed_unread(ending(0, tcp_state::FIN_WAIT2, true, false)));
        assert!(
            !closed_unread(ending(0, tcp_state::FIN_WAIT2, true, true)),
            "a normal close"
        );
        assert!(
            !closed_unread(ending(0, tcp_state::CLOSING, true, true)),
            "simultaneous close"
        );
        assert!(
            !closed_unread(ending(0, tcp_state::FIN_WAIT1, false, false)),
            "not closed by us"
        );
        assert!(
            !closed_unread(ending(0, tcp_state::LAST_ACK, true, true)),
            "the upstream closed first"
        );
    }
}
