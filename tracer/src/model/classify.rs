//! The verdict rules: which open upstream connection is leaked, and why.
//!
//! A Go HTTP/1.1 connection that is pooled or waiting for a response always has a goroutine
//! parked on it whose last read returned EAGAIN; a response body that nobody reads to EOF nor
//! closes leaves the socket in one of three shapes, checked in this order:
//! 1. the upstream closed (CLOSE_WAIT) and the process neither closed nor read its side since;
//! 2. response bytes sit unread in the receive queue and nothing reads;
//! 3. ESTABLISHED, nothing unread, but the last read returned data and no read followed.

use std::time::Duration;

pub use super::leak::{Graces, LeakReason};
use super::{conn::UpstreamConn, stream::H2Stream, tcp_state, unread_data};

fn held_for(since_ns: u64, now_ns: u64, grace: Duration) -> bool {
    u128::from(now_ns.saturating_sub(since_ns)) >= grace.as_nanos()
}

/// The verdict on one open connection at `now_ns`, with the precedence above.
///
/// CLOSE_WAIT is a leak once the process has neither closed nor read the socket for
/// `close_wait` since the upstream's FIN: the grace runs from the later of the FIN and the
/// last read (see `close_wait_since`). Why reads restart it: a relay that forwards a response
/// to a slow downstream client reads the body a few KiB at a time, long after the upstream
/// sent everything and closed (`Connection: close`), and closes at EOF. It sits in CLOSE_WAIT
/// for as long as its client is slow, yet reads all the time: counting from the FIN alone
/// called it leaked. A leaked body's socket is never read after its last data read (Go's
/// transport parks the connection's goroutines until the body is read or closed), and that
/// read came before, or with, the FIN of a complete response: so its grace still runs from
/// the FIN (or that read), and the leak verdicts do not move. A reader that stops halfway
/// through a drain is a leak one grace after its last read. Any read counts, not only one
/// that returned data: after the FIN a read returns data or 0 (EOF; never EAGAIN, the FIN
/// ends waiting), and a reader that has just read EOF closes within a millisecond in Go, so
/// one that has not closed a grace after its EOF is a leak too; counting from the FIN instead
/// would call a drain leaked in the moment between its EOF read and its close.
pub fn judge(conn: &UpstreamConn, now_ns: u64, graces: &Graces) -> Option<LeakReason> {
    if !conn.is_open() {
        return None;
    }
    if conn.state == tcp_state::CLOSE_WAIT {
        if let Some(fin_ns) = conn.peer_fin_ns {
            if held_for(close_wait_since(conn, fin_ns), now_ns, graces.close_wait) {
                return Some(LeakReason::CloseWait);
            }
        }
    }
    // A thread blocked in a read syscall on the socket is listening, however quiet it is.
    if conn.reads_inflight > 0 {
        return None;
    }
    let idle_since = conn.last_activity_ns();
    if conn.unread_bytes() > 0 && held_for(conn.unread_since_ns(), now_ns, graces.unread) {
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

/// Where a CLOSE_WAIT connection's grace starts: the upstream's FIN, or the process's last
/// read of the socket when that came later (it is still reading: a slow drain).
fn close_wait_since(conn: &UpstreamConn, fin_ns: u64) -> u64 {
    conn.last_read_ns
        .map_or(fin_ns, |read_ns| read_ns.max(fin_ns))
}

/// The verdict on one open HTTP/2 stream at `now_ns`. A stream stays open (its request
/// goroutine parked) until the peer ends it or it is reset: a body read to its end or closed
/// ends it at once, and so does a small body the peer finished sending, read or not (a 429
/// left unclosed is garbage, not a leak). What keeps one open is a body nobody finishes:
/// - `unread`: the response was handed over, body bytes wait in Go's stream buffer, and no
///   read of the body was seen for `unread`;
/// - `abandoned`: the body was read in part, then no read for `abandon` while bytes wait.
///
/// Waiting for the response headers is not a leak (a non-streaming completion takes
/// minutes), nor is an empty buffer (nothing waits for the application: an SSE stream between
/// events, a slow upstream), nor a body the caller closed (its reset is on the way) or whose
/// end arrived (the stream is ending).
pub fn judge_stream(stream: &H2Stream, now_ns: u64, graces: &Graces) -> Option<LeakReason> {
    let responded_ns = stream.responded_ns?;
    if stream.body_closed || stream.body_done || stream.buffered_bytes.unwrap_or(0) == 0 {
        return None;
    }
    match stream.last_read_ns {
        Some(read_ns) if stream.read_seen => {
            held_for(read_ns.max(responded_ns), now_ns, graces.abandon)
                .then_some(LeakReason::Abandoned)
        }
        _ => held_for(responded_ns, now_ns, graces.unread).then_some(LeakReason::Unread),
    }
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
mod stream_tests {
    use super::*;
    use crate::model::testkit::SEC;

    const GRACES: Graces = Graces {
        close_wait: Duration::from_secs(2),
        unread: Duration::from_secs(3),
        abandon: Duration::from_secs(7),
    };

    fn responded_at(ns: u64) -> H2Stream {
        H2Stream {
            pid: 7,
            stream: 0xc000_1234,
            conn: 0xc000_0100,
            fd: Some(9),
            stream_id: Some(5),
            opened_ns: 0,
            responded_ns: Some(ns),
            response: 0xc000_2000,
            buffered_bytes: Some(4 << 20),
            bytes_read: None,
            read_seen: false,
            last_read_ns: None,
            body_closed: false,
            body_done: false,
            last: Default::default(),
        }
    }

    #[test]
    fn a_body_never_read_is_unread_at_its_grace_from_the_response() {
        let s = responded_at(10 * SEC);
        assert_eq!(judge_stream(&s, 13 * SEC - 1, &GRACES), None);
        assert_eq!(
            judge_stream(&s, 13 * SEC, &GRACES),
            Some(LeakReason::Unread)
        );
    }

    #[test]
    fn waiting_for_headers_for_minutes_is_not_a_leak() {
        let s = H2Stream {
            responded_ns: None,
            ..responded_at(0)
        };
        assert_eq!(judge_stream(&s, 600 * SEC, &GRACES), None);
    }

    #[test]
    fn a_body_read_in_part_is_abandoned_at_its_grace_from_the_last_read() {
        let s = H2Stream {
            read_seen: true,
            last_read_ns: Some(20 * SEC),
            ..responded_at(10 * SEC)
        };
        assert_eq!(judge_stream(&s, 27 * SEC - 1, &GRACES), None);
        assert_eq!(
            judge_stream(&s, 27 * SEC, &GRACES),
            Some(LeakReason::Abandoned)
        );
    }

    #[test]
    fn an_empty_buffer_a_closed_body_or_an_ended_one_is_not_a_leak() {
        let waiting = H2Stream {
            read_seen: true,
            last_read_ns: Some(SEC),
            buffered_bytes: Some(0),
            ..responded_at(0)
        };
        assert_eq!(judge_stream(&waiting, 3600 * SEC, &GRACES), None);
        let closed = H2Stream {
            body_closed: true,
            buffered_bytes: None,
            ..responded_at(0)
        };
        assert_eq!(judge_stream(&closed, 3600 * SEC, &GRACES), None);
        let ended = H2Stream {
            body_done: true,
            ..responded_at(0)
        };
        assert_eq!(judge_stream(&ended, 3600 * SEC, &GRACES), None);
        // The same stream with bytes waiting is one.
        assert_eq!(
            judge_stream(&responded_at(0), 3600 * SEC, &GRACES),
            Some(LeakReason::Unread)
        );
    }
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

    /// In CLOSE_WAIT since 10 s with most of a body queued, as a slow drain leaves it.
    fn draining_after_fin() -> UpstreamConn {
        let mut c = established(0);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(10 * SEC);
        c.last_read_ret = Some(4096);
        c.last_read_ns = Some(9 * SEC);
        c.set_recv_q(90_000, 10 * SEC);
        c
    }

    #[test]
    fn a_read_before_the_fin_does_not_move_the_close_wait_grace() {
        let g = Graces::default();
        let c = draining_after_fin();
        assert_eq!(judge(&c, 15 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 15 * SEC, &g), Some(LeakReason::CloseWait));
        let mut at_fin = c.clone();
        at_fin.last_read_ns = Some(10 * SEC);
        assert_eq!(
            judge(&at_fin, 15 * SEC - 1, &g),
            None,
            "a read with the FIN"
        );
        assert_eq!(judge(&at_fin, 15 * SEC, &g), Some(LeakReason::CloseWait));
    }

    #[test]
    fn a_slow_drain_after_the_fin_is_never_close_wait() {
        // Reads 4 KiB every 4 s (inside the 5 s grace) for a minute after the FIN: judged at
        // every moment between two reads, never a leak.
        let g = Graces::default();
        let mut c = draining_after_fin();
        let mut queued = 90_000u32;
        for read in 0..15u64 {
            let read_ns = 11 * SEC + read * 4 * SEC;
            c.last_read_ns = Some(read_ns);
            c.last_read_ret = Some(4096);
            queued = queued.saturating_sub(4096);
            c.set_recv_q(queued, read_ns);
            for t in [read_ns, read_ns + 2 * SEC, read_ns + 4 * SEC - 1] {
                assert_eq!(judge(&c, t, &g), None, "read {read}, at {t}");
            }
        }
    }

    #[test]
    fn a_drain_that_stops_is_close_wait_one_grace_after_its_last_read() {
        let g = Graces::default();
        let mut c = draining_after_fin();
        c.last_read_ns = Some(30 * SEC);
        c.set_recv_q(40_000, 30 * SEC);
        assert_eq!(judge(&c, 35 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 35 * SEC, &g), Some(LeakReason::CloseWait));
        // Grace since the FIN long gone: only the read decides.
        assert_eq!(judge(&c, 3600 * SEC, &g), Some(LeakReason::CloseWait));
    }

    #[test]
    fn an_eof_read_then_no_close_is_close_wait_one_grace_after_the_eof() {
        let g = Graces::default();
        let mut c = draining_after_fin();
        c.last_read_ret = Some(0);
        c.last_read_ns = Some(40 * SEC);
        c.set_recv_q(0, 40 * SEC);
        assert_eq!(judge(&c, 45 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 45 * SEC, &g), Some(LeakReason::CloseWait));
    }

    #[test]
    fn a_drain_that_stops_is_unread_first_when_that_grace_is_shorter() {
        let g = Graces {
            close_wait: Duration::from_secs(20),
            unread: Duration::from_secs(10),
            ..Graces::default()
        };
        let mut c = draining_after_fin();
        c.last_read_ns = Some(30 * SEC);
        c.set_recv_q(40_000, 30 * SEC);
        assert_eq!(judge(&c, 40 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 40 * SEC, &g), Some(LeakReason::Unread));
        assert_eq!(judge(&c, 50 * SEC, &g), Some(LeakReason::CloseWait));
    }

    #[test]
    fn a_pre_existing_drain_seen_as_a_shrinking_queue_restarts_the_grace() {
        // Pre-existing connections get last_read_ns from a queue that shrank between samples.
        let g = Graces::default();
        let mut c = draining_after_fin();
        c.origin = Origin::PreExisting;
        c.last_read_ret = None;
        c.last_read_ns = Some(14 * SEC);
        assert_eq!(judge(&c, 19 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 19 * SEC, &g), Some(LeakReason::CloseWait));
    }

    #[test]
    fn bytes_caught_on_their_way_to_a_live_reader_are_not_unread() {
        // An SSE stream open before tracing started (no read history): its events arrive
        // every 200 ms and are read at once. A sample that catches one in the queue finds
        // bytes that arrived after the previous sample saw the queue empty.
        let g = Graces::default();
        let mut c = established(0);
        c.origin = Origin::PreExisting;
        for t in 0..20 {
            c.set_recv_q(0, t * SEC);
        }
        c.set_recv_q(41, 20 * SEC);
        assert_eq!(judge(&c, 20 * SEC, &g), None);
        // Left there, they are a leak one grace after the queue was last seen empty.
        c.set_recv_q(41, 25 * SEC);
        assert_eq!(judge(&c, 29 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 29 * SEC, &g), Some(LeakReason::Unread));
        // Bytes queued since the first sample are judged from it, as before.
        let mut never_empty = established(0);
        never_empty.origin = Origin::PreExisting;
        never_empty.set_recv_q(5000, 0);
        assert_eq!(judge(&never_empty, 10 * SEC, &g), Some(LeakReason::Unread));
    }

    #[test]
    fn an_empty_queue_does_not_delay_an_unread_leak_after_the_last_read() {
        // The headers read at 10 s, the body left in the queue: the queue was last seen
        // empty before the response came, so the grace runs from the read, as without it.
        let g = Graces::default();
        let mut c = established(0);
        c.set_recv_q(0, 9 * SEC);
        c.last_read_ns = Some(10 * SEC);
        c.last_read_ret = Some(512);
        c.set_recv_q(90_000, 11 * SEC);
        assert_eq!(judge(&c, 20 * SEC - 1, &g), None);
        assert_eq!(judge(&c, 20 * SEC, &g), Some(LeakReason::Unread));
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
