//! Plain words for one connection or HTTP/2 stream: what happened to it (a connection's
//! timeline) and why it is judged leaked or not, with the code pattern that usually causes
//! each kind of leak. The judgement itself is the model's (`ConnRow::verdict`,
//! `StreamRow::verdict`); this only puts its reasons into sentences.

use crate::model::{
    classify::{Graces, LeakReason},
    state_name,
    table::{Origin, UpstreamConn},
    tcp_state,
};

use super::{
    units,
    view::{ConnRow, StreamRow},
};

/// Why a connection is (not) leaked, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// `LEAKED (close_wait)`, `healthy`, `not leaked yet`.
    pub verdict: String,
    /// What the kernel shows and how long it has lasted.
    pub why: String,
    /// The code pattern that usually causes it, for leaks.
    pub cause: Option<String>,
}

/// What `read()` returned, in words.
fn read_result(ret: i64) -> String {
    match ret {
        n if n > 0 => format!("{} of data", units::bytes(n.unsigned_abs())),
        0 => "EOF".to_owned(),
        -11 => "EAGAIN (nothing to read: a reader was waiting)".to_owned(),
        n => format!("error {}", -n),
    }
}

pub fn explain(row: &ConnRow, now_ns: u64, graces: &Graces) -> Explanation {
    let c = &row.conn;
    let ago = |t: u64| units::span(now_ns.saturating_sub(t));
    let idle = ago(c.last_activity_ns());
    let unread = units::bytes(u64::from(c.unread_bytes()));
    match row.verdict {
        Some(LeakReason::CloseWait) => {
            let fin = c.peer_fin_ns.map_or_else(|| "a while".to_owned(), ago);
            // Found already in CLOSE_WAIT: the FIN came before tracing started.
            let when = if c.origin == Origin::PreExisting && c.peer_fin_ns == Some(c.opened_ns) {
                format!("at least {fin} ago (before tracing started)")
            } else {
                format!("{fin} ago")
            };
            Explanation {
                verdict: "LEAKED (close_wait)".into(),
                why: format!(
                    "The upstream closed this connection {when} and this process never closed its side \
                     (close_wait grace {}). A live Go reader would have read EOF and closed it within a millisecond.",
                    units::grace(graces.close_wait)
                ),
                cause: Some(
                    "A response body was neither read to EOF nor closed: look for an early return on a non-200 \
                     status, or an error branch, before `defer resp.Body.Close()`."
                        .into(),
                ),
            }
        }
        Some(LeakReason::Unread) => Explanation {
            verdict: "LEAKED (unread)".into(),
            why: format!(
                "{unread} of response data wait in the kernel's receive queue and nothing has read this socket \
                 for {idle} (unread grace {}), with no read in progress.",
                units::grace(graces.unread)
            ),
            cause: Some(
                "A response body, often a large one, was never read nor closed: look for code that checks only \
                 the status or headers and returns (or stores the response) without `resp.Body.Close()`."
                    .into(),
            ),
        },
        Some(LeakReason::Abandoned) => Explanation {
            verdict: "LEAKED (abandoned)".into(),
            why: format!(
                "The last read returned {} {idle} ago and nothing has read since (abandon grace {}). A live \
                 reader's last read finds nothing (EAGAIN) and parks; data followed by silence means nobody asked again.",
                c.last_read_ret.map_or_else(|| "data".to_owned(), read_result),
                units::grace(graces.abandon)
            ),
            cause: Some(
                "A streamed response (SSE) was read partly, then dropped without Close: look for a loop over the \
                 stream that breaks or returns early (client gone, error, end marker) without `resp.Body.Close()`."
                    .into(),
            ),
        },
        None => not_leaked(c, now_ns, graces),
    }
}

/// Over HTTP/2, what an unclosed body keeps, and where to look (every stream leak says it).
const STREAM_LEAK_CAUSE: &str = "Over HTTP/2 an unclosed body keeps the stream (its goroutine and \
     buffer), not the connection: look for a response whose Body is neither read to EOF nor closed.";

/// "Stream 7", or what is known of a stream without an id yet.
fn stream_name(s: &StreamRow) -> String {
    match s.stream.stream_id {
        Some(id) => format!("HTTP/2 stream {id}"),
        None => "An HTTP/2 stream".to_owned(),
    }
}

/// What waits in Go's buffer for the stream, as the end of a sentence.
fn buffered(s: &StreamRow) -> String {
    match s.buffered_bytes {
        Some(0) => "; nothing waits in Go's stream buffer".to_owned(),
        Some(n) => format!("; {} sit in Go's stream buffer", units::bytes(n)),
        // Not measured: say what it can hold.
        None => "; what the upstream sent of the body waits in Go's stream buffer (up to the \
                 stream's 4 MiB window)"
            .to_owned(),
    }
}

/// Why an HTTP/2 stream is (not) leaked, for people.
pub fn explain_stream(s: &StreamRow, now_ns: u64, graces: &Graces) -> Explanation {
    let st = &s.stream;
    let ago = |t: u64| units::span(now_ns.saturating_sub(t));
    let name = stream_name(s);
    let on = format!("{name} on {}", s.host);
    match s.verdict {
        Some(LeakReason::Unread) => Explanation {
            verdict: "LEAKED (unread)".into(),
            why: format!(
                "{on}: the response headers arrived {} ago and the relay has not read one byte of \
                 the body since (unread grace {}){}.",
                st.responded_ns.map_or_else(|| "a while".to_owned(), ago),
                units::grace(graces.unread),
                buffered(s)
            ),
            cause: Some(format!(
                "{STREAM_LEAK_CAUSE} Often it is an early return after checking the status or headers \
                 (or a response stored for later) without `resp.Body.Close()`."
            )),
        },
        Some(LeakReason::Abandoned) => Explanation {
            verdict: "LEAKED (abandoned)".into(),
            why: format!(
                "{on}: the relay read {} of the body, the last read seen {} ago, and nothing has \
                 read it since (abandon grace {}){}.",
                read_amount(st),
                ago(st.last_activity_ns()),
                units::grace(graces.abandon),
                buffered(s)
            ),
            cause: Some(format!(
                "{STREAM_LEAK_CAUSE} Often it is a loop over a streamed (SSE) body that breaks or \
                 returns early (client gone, error, end marker) without `resp.Body.Close()`."
            )),
        },
        // No other reason applies to a stream (`LeakKind::reasons`); said plainly if one does.
        Some(reason) => Explanation {
            verdict: format!("LEAKED ({})", reason.as_str()),
            why: format!("{on}: {}.", reason.summary()),
            cause: Some(STREAM_LEAK_CAUSE.to_owned()),
        },
        None => stream_not_leaked(s, &on, now_ns, graces),
    }
}

/// "64.0 KiB" when the bytes read add up, else "some".
fn read_amount(st: &crate::model::stream::H2Stream) -> String {
    st.bytes_read
        .map_or_else(|| "some".to_owned(), units::bytes)
}

fn stream_not_leaked(s: &StreamRow, on: &str, now_ns: u64, graces: &Graces) -> Explanation {
    let st = &s.stream;
    let ago = |t: u64| units::span(now_ns.saturating_sub(t));
    let left = |since: u64, grace: std::time::Duration| {
        let deadline = since.saturating_add(u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX));
        units::span(deadline.saturating_sub(now_ns))
    };
    let (verdict, why) = match st.responded_ns {
        _ if st.body_closed => (
            "healthy",
            format!(
                "{on}: its body was closed, so the stream ends (Go resets it if the body was not \
                 read to its end): not a leak."
            ),
        ),
        Some(_) if st.body_done => (
            "healthy",
            format!(
                "{on}: the whole body arrived (the upstream ended the stream), so the stream \
                 ends, read or not: not a leak."
            ),
        ),
        None => (
            "healthy",
            format!(
                "{on}: the request went out {} ago and the response headers have not arrived: \
                 waiting for them is not a leak (a completion can take minutes).",
                ago(st.opened_ns)
            ),
        ),
        Some(_) if st.buffered_bytes.unwrap_or(0) == 0 => (
            "healthy",
            format!(
                "{on}: nothing of its body waits to be read (the relay keeps up with it, or the \
                 upstream is between events): not a leak."
            ),
        ),
        Some(responded) if !st.read_seen => (
            "not leaked yet",
            format!(
                "{on}: the response headers arrived {} ago and no byte of the body has been read; \
                 with no read {} from now it is an unread leak (grace {}).",
                ago(responded),
                left(responded, graces.unread),
                units::grace(graces.unread)
            ),
        ),
        Some(_) => (
            "not leaked yet",
            format!(
                "{on}: the relay read {} of the body, the last read seen {} ago; with no read {} \
                 from now it is an abandoned leak (grace {}).",
                read_amount(st),
                ago(st.last_activity_ns()),
                left(st.last_activity_ns(), graces.abandon),
                units::grace(graces.abandon)
            ),
        ),
    };
    Explanation {
        verdict: verdict.into(),
        why,
        cause: None,
    }
}

fn not_leaked(c: &UpstreamConn, now_ns: u64, graces: &Graces) -> Explanation {
    let ago = |t: u64| units::span(now_ns.saturating_sub(t));
    let left = |since: u64, grace: std::time::Duration| {
        let deadline = since.saturating_add(u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX));
        units::span(deadline.saturating_sub(now_ns))
    };
    let pending = |why: String| Explanation {
        verdict: "not leaked yet".into(),
        why,
        cause: None,
    };
    let healthy = |why: String| Explanation {
        verdict: "healthy".into(),
        why,
        cause: None,
    };
    let idle_since = c.last_activity_ns();
    if c.state == tcp_state::SYN_SENT {
        return healthy("Connecting: it is judged once the handshake completes.".into());
    }
    if c.state == tcp_state::CLOSE_WAIT {
        if let Some(fin) = c.peer_fin_ns {
            return pending(format!(
                "The upstream closed it {} ago. If this process has not closed its side {} from now, it is a \
                 close_wait leak (grace {}).",
                ago(fin),
                left(fin, graces.close_wait),
                units::grace(graces.close_wait)
            ));
        }
    }
    if c.reads_inflight > 0 {
        return healthy(
            "A thread is blocked in read() on it right now: someone is listening, so it is not leaked.".into(),
        );
    }
    if c.unread_bytes() > 0 {
        return pending(format!(
            "{} of response data are unread and nothing has read for {}; with no read {} from now it is an \
             unread leak (grace {}).",
            units::bytes(u64::from(c.unread_bytes())),
            ago(idle_since),
            left(idle_since, graces.unread),
            units::grace(graces.unread)
        ));
    }
    match c.last_read_ret {
        Some(ret) if ret > 0 && c.state == tcp_state::ESTABLISHED => pending(format!(
            "Its last read returned {} {} ago; with no read {} from now it is an abandoned leak (grace {}).",
            read_result(ret),
            ago(idle_since),
            left(idle_since, graces.abandon),
            units::grace(graces.abandon)
        )),
        Some(-11) => healthy(
            "Its last read found nothing (EAGAIN): a goroutine is parked on it, as on every pooled or waiting \
             connection. That is how a healthy connection looks."
                .into(),
        ),
        _ if c.origin == Origin::PreExisting => healthy(
            "Open before tracing started: judged from socket samples only (state and receive queue), so never \
             called abandoned. Nothing is wrong with it now."
                .into(),
        ),
        _ => healthy(
            "Established with nothing unread: waiting for its response, or idle in the pool. Nothing is wrong \
             with it now."
                .into(),
        ),
    }
}

/// One line of a connection's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, if known (None: has not happened).
    pub at_ns: Option<u64>,
    pub what: String,
}

/// What happened to the connection, in order, ending with how it is now.
pub fn timeline(c: &UpstreamConn) -> Vec<Event> {
    let mut events = Vec::new();
    let mut at = |at_ns: Option<u64>, what: String| events.push(Event { at_ns, what });
    match c.origin {
        Origin::Traced => at(Some(c.opened_ns), "connect()".into()),
        Origin::PreExisting => at(
            Some(c.opened_ns),
            "first seen: open before tracing started".into(),
        ),
    }
    if let Some(t) = c.established_ns {
        if c.origin == Origin::Traced {
            at(Some(t), "established (handshake done)".into());
        }
    }
    if c.reads > 0 || c.last_read_ns.is_some() {
        let what = match c.last_read_ret {
            Some(ret) => format!(
                "last read returned {}; {} reads, {} read in all",
                read_result(ret),
                c.reads,
                units::bytes(c.bytes_read)
            ),
            None => "a read (the receive queue shrank)".into(),
        };
        at(c.last_read_ns, what);
    }
    if let Some(t) = c.peer_fin_ns {
        if c.origin == Origin::PreExisting && t == c.opened_ns {
            at(
                Some(t),
                "already in CLOSE_WAIT: the upstream had closed its side".into(),
            );
        } else {
            at(Some(t), "upstream closed its side (FIN received)".into());
        }
    }
    if let Some(t) = c.local_close_ns {
        at(Some(t), "closed by this process".into());
    }
    // Timeless entries (a read count with no time) go last among the past.
    events.sort_by_key(|e| e.at_ns.unwrap_or(u64::MAX));
    let mut now = format!(
        "{}: {} unread (Recv-Q {})",
        state_name(c.state),
        units::bytes(u64::from(c.unread_bytes())),
        c.recv_q_bytes()
    );
    if c.local_close_ns.is_none() && c.state != tcp_state::SYN_SENT {
        now.push_str(", not closed by this process");
    }
    if c.reads_inflight > 0 {
        now.push_str(&format!(", {} read(s) in progress", c.reads_inflight));
    }
    events.push(Event {
        at_ns: None,
        what: now,
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{classify::judge, RecvQ};

    const SEC: u64 = 1_000_000_000;

    fn row(conn: UpstreamConn, now: u64, graces: &Graces) -> ConnRow {
        let verdict = judge(&conn, now, graces);
        ConnRow {
            host: conn.remote.ip().to_string(),
            conn,
            verdict,
            streams: vec![],
        }
    }

    fn established(at: u64) -> UpstreamConn {
        let mut c = UpstreamConn::for_test(Origin::Traced);
        c.opened_ns = at;
        c.established_ns = Some(at);
        c
    }

    #[test]
    fn a_close_wait_leak_says_since_when_and_what_code_to_look_for() {
        let g = Graces::default();
        let mut c = established(SEC);
        c.state = tcp_state::CLOSE_WAIT;
        c.peer_fin_ns = Some(3 * SEC);
        c.recv_q = Some(RecvQ {
            bytes: 1,
            at_ns: 3 * SEC,
        });
        let e = explain(&row(c.clone(), 15 * SEC, &g), 15 * SEC, &g);
        assert_eq!(e.verdict, "LEAKED (close_wait)");
        assert!(e.why.starts_with("The upstream closed this connection 12.0s ago and this process never closed its side"), "{}", e.why);
        assert!(e
            .cause
            .as_deref()
            .is_some_and(|c| c.contains("early return on a non-200")));
        // Inside the grace: not yet, and how long until it would be.
        let e = explain(&row(c, 5 * SEC, &g), 5 * SEC, &g);
        assert_eq!(e.verdict, "not leaked yet");
        assert!(
            e.why.contains("2.0s ago") && e.why.contains("3.0s from now"),
            "{}",
            e.why
        );
        assert_eq!(e.cause, None);
    }

    #[test]
    fn unread_and_abandoned_leaks_name_their_evidence() {
        let g = Graces::default();
        let mut c = established(SEC);
        c.recv_q = Some(RecvQ {
            bytes: 130_048,
            at_ns: 2 * SEC,
        });
        let e = explain(&row(c, 60 * SEC, &g), 60 * SEC, &g);
        assert_eq!(e.verdict, "LEAKED (unread)");
        assert!(e.why.starts_with("127.0 KiB of response data"), "{}", e.why);

        let mut c = established(SEC);
        c.last_read_ret = Some(295);
        c.last_read_ns = Some(2 * SEC);
        c.reads = 2;
        let e = explain(&row(c.clone(), 60 * SEC, &g), 60 * SEC, &g);
        assert_eq!(e.verdict, "LEAKED (abandoned)");
        assert!(
            e.why
                .starts_with("The last read returned 295 B of data 58.0s ago"),
            "{}",
            e.why
        );
        assert!(e.cause.as_deref().is_some_and(|c| c.contains("SSE")));
        let e = explain(&row(c, 10 * SEC, &g), 10 * SEC, &g);
        assert!(e.why.contains("22.0s from now"), "{}", e.why);
    }

    #[test]
    fn healthy_connections_say_why_they_are_fine() {
        let g = Graces::default();
        let mut pooled = established(SEC);
        pooled.last_read_ret = Some(-11);
        pooled.last_read_ns = Some(2 * SEC);
        let e = explain(&row(pooled.clone(), 3600 * SEC, &g), 3600 * SEC, &g);
        assert_eq!(e.verdict, "healthy");
        assert!(e.why.contains("EAGAIN"), "{}", e.why);
        pooled.reads_inflight = 1;
        assert!(explain(&row(pooled, 3600 * SEC, &g), 3600 * SEC, &g)
            .why
            .contains("blocked in read()"));
        let mut connecting = established(SEC);
        connecting.state = tcp_state::SYN_SENT;
        assert!(explain(&row(connecting, 9 * SEC, &g), 9 * SEC, &g)
            .why
            .starts_with("Connecting"));
        let old = UpstreamConn::for_test(Origin::PreExisting);
        assert!(explain(&row(old.clone(), 9 * SEC, &g), 9 * SEC, &g)
            .why
            .contains("before tracing started"));
        // Found in CLOSE_WAIT when tracing started: the FIN is older than that.
        let mut found_closed = old;
        found_closed.state = tcp_state::CLOSE_WAIT;
        found_closed.opened_ns = 5 * SEC;
        found_closed.peer_fin_ns = Some(5 * SEC);
        let e = explain(&row(found_closed.clone(), 20 * SEC, &g), 20 * SEC, &g);
        assert!(
            e.why
                .contains("at least 15.0s ago (before tracing started)"),
            "{}",
            e.why
        );
        assert!(timeline(&found_closed)[1]
            .what
            .starts_with("already in CLOSE_WAIT"));
    }

    fn stream(responded_ns: Option<u64>) -> StreamRow {
        let stream = crate::model::stream::H2Stream::for_test(7, SEC, responded_ns);
        let verdict = crate::model::classify::judge_stream(&stream, 100 * SEC, &Graces::default());
        StreamRow {
            host: "api.openai.com".into(),
            stream,
            verdict,
            buffered_bytes: None,
        }
    }

    /// `s` with its verdict judged again at `now`.
    fn judged(mut s: StreamRow, now: u64, g: &Graces) -> StreamRow {
        s.verdict = crate::model::classify::judge_stream(&s.stream, now, g);
        s
    }

    #[test]
    fn a_stream_never_read_says_how_long_and_what_it_holds() {
        let g = Graces::default();
        let mut s = judged(stream(Some(5 * SEC)), 100 * SEC, &g);
        s.buffered_bytes = Some(4 << 20);
        let e = explain_stream(&s, 100 * SEC, &g);
        assert_eq!(e.verdict, "LEAKED (unread)");
        assert_eq!(
            e.why,
            "HTTP/2 stream 7 on api.openai.com: the response headers arrived 1m35s ago and the relay \
             has not read one byte of the body since (unread grace 10s); 4.0 MiB sit in Go's stream \
             buffer."
        );
        assert!(
            e.cause.as_deref().is_some_and(|c| {
                c.starts_with(
                "Over HTTP/2 an unclosed body keeps the stream (its goroutine and buffer), not the \
                 connection: look for a response whose Body is neither read to EOF nor closed."
            )
            }),
            "{:?}",
            e.cause
        );
        // Unmeasured, it says what the buffer can hold.
        s.buffered_bytes = None;
        assert!(explain_stream(&s, 100 * SEC, &g)
            .why
            .ends_with("waits in Go's stream buffer (up to the stream's 4 MiB window)."));
        // Inside the grace: how long until it would be one.
        let s = judged(stream(Some(95 * SEC)), 100 * SEC, &g);
        let e = explain_stream(&s, 100 * SEC, &g);
        assert_eq!((e.verdict.as_str(), e.cause), ("not leaked yet", None));
        assert!(
            e.why.contains("5.0s from now it is an unread leak"),
            "{}",
            e.why
        );
    }

    #[test]
    fn a_stream_read_in_part_then_dropped_is_abandoned() {
        let g = Graces::default();
        let mut s = stream(Some(5 * SEC));
        s.stream.read_seen = true;
        s.stream.bytes_read = Some(12_288);
        s.stream.last_read_ns = Some(40 * SEC);
        let s = judged(s, 100 * SEC, &g);
        let e = explain_stream(&s, 100 * SEC, &g);
        assert_eq!(e.verdict, "LEAKED (abandoned)");
        assert!(
            e.why.starts_with(
                "HTTP/2 stream 7 on api.openai.com: the relay read 12.0 KiB of the body, the last \
                 read seen 1m00s ago, and nothing has read it since (abandon grace 30s)"
            ),
            "{}",
            e.why
        );
        assert!(e.cause.as_deref().is_some_and(|c| c.contains("SSE")));
    }

    #[test]
    fn healthy_streams_say_why_they_are_fine() {
        let g = Graces::default();
        let waiting = judged(stream(None), 600 * SEC, &g);
        let e = explain_stream(&waiting, 600 * SEC, &g);
        assert_eq!(e.verdict, "healthy");
        assert!(
            e.why.contains("response headers have not arrived"),
            "{}",
            e.why
        );
        let mut reading = stream(Some(5 * SEC));
        reading.stream.read_seen = true;
        reading.stream.last_read_ns = Some(6 * SEC);
        reading.stream.buffered_bytes = Some(0);
        let reading = judged(reading, 600 * SEC, &g);
        assert!(explain_stream(&reading, 600 * SEC, &g)
            .why
            .contains("nothing of its body waits to be read"));
        let mut closed = stream(Some(5 * SEC));
        closed.stream.body_closed = true;
        let closed = judged(closed, 600 * SEC, &g);
        let e = explain_stream(&closed, 600 * SEC, &g);
        assert_eq!(e.verdict, "healthy");
        assert!(
            e.why.contains("its body was closed, so the stream ends"),
            "{}",
            e.why
        );
        let mut ended = stream(Some(5 * SEC));
        ended.stream.body_done = true;
        let ended = judged(ended, 600 * SEC, &g);
        assert!(explain_stream(&ended, 600 * SEC, &g)
            .why
            .contains("the whole body arrived"));
    }

    #[test]
    fn the_timeline_is_in_order_and_ends_with_now() {
        let mut c = established(SEC);
        c.last_read_ns = Some(2 * SEC);
        c.last_read_ret = Some(325);
        c.reads = 2;
        c.bytes_read = 325;
        c.peer_fin_ns = Some(3 * SEC);
        c.state = tcp_state::CLOSE_WAIT;
        c.recv_q = Some(RecvQ {
            bytes: 1,
            at_ns: 3 * SEC,
        });
        let t = timeline(&c);
        let lines: Vec<(Option<u64>, &str)> =
            t.iter().map(|e| (e.at_ns, e.what.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (Some(SEC), "connect()"),
                (Some(SEC), "established (handshake done)"),
                (
                    Some(2 * SEC),
                    "last read returned 325 B of data; 2 reads, 325 B read in all"
                ),
                (Some(3 * SEC), "upstream closed its side (FIN received)"),
                (
                    None,
                    "CLOSE_WAIT: 0 B unread (Recv-Q 1), not closed by this process"
                ),
            ]
        );
    }
}
