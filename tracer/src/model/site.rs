//! Call sites (issue 13): the line of the relay that obtained each response, so a leak names
//! the code that leaked it. The Go-aware probes read the goroutine's stack where a request is
//! handed to Go's transport; the collector names each distinct stack's frames from
//! `.gopclntab` once ([`SiteStack`]). Requests send nothing: the programs count them per
//! stack ([`SiteRequests`] at each sample), keep the last request of each connection, which
//! the collector reads at its samples ([`SiteEvent`], as `Input::SiteSeen`), and log each
//! HTTP/2 response with its request, which it hands over at its drains ([`SiteResponse`]):
//! - HTTP/1.1: the response is read on connection (pid, fd). A pooled connection carries many
//!   requests; the one whose response was never finished is the last, so each request
//!   replaces the site of its connection, and only the last one is a leak's site.
//! - HTTP/2: the response's address, which its stream keeps (`clientStream.res`).
//!
//! The call site of a stack is its innermost frame outside Go's standard library (and
//! golang.org/x/net/http2, which the standard library bundles) and outside the wrappers the
//! person asked to skip (`--site-skip REGEX`, matched against the function name).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

/// Application frames a leak's `stack` shows.
pub const STACK_FRAMES: usize = 8;
/// HTTP/2 responses remembered before their stream is sampled, all targets together: a
/// response joins its stream at the stream's next sample, so only a leaked stream's is needed
/// for long.
pub const MAX_RESPONSES: usize = 65_536;
/// Distinct stacks remembered (a relay's request paths number in the hundreds).
pub const MAX_STACKS: usize = 65_536;

/// One frame of a stack, as `.gopclntab` names it (inlined calls expanded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SiteFrame {
    /// The function as Go names it: `main.relay`, `github.com/x/relay/adaptor.DoRequest`,
    /// `net/http.(*Client).Do`.
    pub function: String,
    pub file: String,
    pub line: u32,
    /// Part of Go's standard library (or the HTTP/2 client it bundles): never a call site.
    pub library: bool,
}

impl fmt::Display for SiteFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.function, self.file, self.line)
    }
}

/// A line of the relay that obtains responses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallSite {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.function, self.file, self.line)
    }
}

impl CallSite {
    /// "file.go:123", for labels and narrow columns: the file's last path element and the line.
    pub fn short(&self) -> String {
        let file = self.file.rsplit('/').next().unwrap_or(&self.file);
        format!("{file}:{}", self.line)
    }
}

/// A stack the collector named, sent once before the first [`SiteEvent`] that uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStack {
    pub id: u32,
    /// Innermost first: the caller of the transport's function, then its callers.
    pub frames: Vec<SiteFrame>,
}

/// What a request's response is joined by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SiteKey {
    /// An HTTP/1.1 request on the connection whose socket is `fd`.
    Connection { fd: i32 },
    /// An HTTP/2 response at this address in the process (its stream's `res`).
    H2Response { response: u64 },
}

/// One request handed to Go's transport, by the stack `stack` ([`SiteStack::id`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteEvent {
    pub pid: u32,
    pub key: SiteKey,
    pub stack: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub at_ns: u64,
}

/// Requests handed to Go's transport by the stack `stack` ([`SiteStack::id`]) since the last
/// such count: the programs count them (tracer-ebpf/src/gosite.rs), the collector sends what
/// was added at each sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRequests {
    pub pid: u32,
    pub stack: u32,
    pub requests: u64,
}

/// An HTTP/2 response at `response` in process `pid`, obtained by the stack `stack` at `at_ns`
/// (the programs log them; the collector hands them over in batches).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteResponse {
    pub pid: u32,
    pub response: u64,
    pub stack: u32,
    pub at_ns: u64,
}

/// Wrappers to look through: `--site-skip REGEX`, matched against each frame's function name.
#[derive(Clone, Debug, Default)]
pub struct SiteRules {
    skip: Vec<regex::Regex>,
}

impl SiteRules {
    /// Compiles the patterns; the error names the one that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let skip = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p)
                    .map_err(|e| format!("--site-skip {p:?} is not a regular expression: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { skip })
    }

    pub fn skips(&self, function: &str) -> bool {
        self.skip.iter().any(|r| r.is_match(function))
    }
}

/// Whether a function belongs to Go's standard library (or the HTTP/2 client it bundles), by
/// its package path: the first path element of a standard package has no dot (`net/http`,
/// `runtime`, `vendor/golang.org/x/...`, `internal/poll`, compiler-generated `type:.eq.*`),
/// except `main`; an application's packages live under a module path with a dot in its first
/// element (`github.com/...`), or under `module` (the main module's own path, which may have
/// no dot: `one-api/relay/...`).
pub fn is_library(function: &str, module: Option<&str>) -> bool {
    if let Some(module) = module.filter(|m| !m.is_empty()) {
        if function
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('.'))
        {
            return false;
        }
    }
    // Compiler-generated: equality and hash functions (`type:.eq.T`), `go:` symbols.
    if function.starts_with("type:") || function.starts_with("go:") {
        return true;
    }
    if function
        .strip_prefix("golang.org/x/net/http2")
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('/'))
    {
        return true;
    }
    let first = match function.find('/') {
        Some(slash) => &function[..slash],
        None => function.split('.').next().unwrap_or(function),
    };
    first != "main" && !first.contains('.')
}

/// What a stack says about where its request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSite {
    pub call_site: Option<CallSite>,
    /// Up to `STACK_FRAMES` application frames from the call site outwards, as
    /// "function file:line".
    pub stack: Vec<String>,
    /// Every frame, innermost first (the transport's own included).
    pub frames: Arc<[SiteFrame]>,
}

impl StackSite {
    pub fn of(frames: Arc<[SiteFrame]>, rules: &SiteRules) -> Self {
        let mut app = frames
            .iter()
            .filter(|f| !f.library)
            .skip_while(|f| rules.skips(&f.function))
            .peekable();
        let call_site = app.peek().map(|f| CallSite {
            function: f.function.clone(),
            file: f.file.clone(),
            line: f.line,
        });
        let stack = app.take(STACK_FRAMES).map(ToString::to_string).collect();
        Self {
            call_site,
            stack,
            frames,
        }
    }
}

/// An HTTP/2 response: (pid, its address), as the streams a sample shows name it.
pub type Response = (u32, u64);

/// When and by which stack a response was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Obtained {
    at_ns: u64,
    stack: u32,
}

/// Every stack seen, the last request on each connection, and recent HTTP/2 responses.
#[derive(Debug, Default)]
pub struct SiteTable {
    rules: SiteRules,
    stacks: HashMap<u32, Arc<StackSite>>,
    /// Requests per stack over the session.
    requests: HashMap<u32, u64>,
    by_conn: HashMap<(u32, i32), Obtained>,
    /// HTTP/2 responses (pid, response) in the order they came, until they are older than the
    /// samples look back. Nearly every stream ends before a sample shows it, so a response is
    /// kept in this list, an append, and joined to its stream only at a sample
    /// ([`SiteTable::match_responses`]): one insert into a map per request was most of what
    /// the tracer process spent per request with call sites on (bench/RESULTS.md P).
    recent: VecDeque<(Response, Obtained)>,
    /// How many of `recent`'s newest entries came after the last sample.
    fresh: usize,
    /// The responses of the streams open at the last sample.
    by_response: HashMap<Response, Obtained>,
    /// Open streams that no response matched at the last sample, for the first time.
    missed: HashSet<Response>,
    /// Open streams whose response all of `recent` was searched for in vain: only responses
    /// that come later can be theirs (a stream whose request was sent before tracing began,
    /// or took a path with no probe).
    searched: HashSet<Response>,
}

impl SiteTable {
    /// Sets the wrappers to skip (before any input: stacks already named are renamed).
    pub fn set_rules(&mut self, rules: SiteRules) {
        self.rules = rules;
        for site in self.stacks.values_mut() {
            *site = Arc::new(StackSite::of(Arc::clone(&site.frames), &self.rules));
        }
    }

    pub fn apply_stack(&mut self, stack: SiteStack) {
        if self.stacks.len() >= MAX_STACKS && !self.stacks.contains_key(&stack.id) {
            // A bound, not a working size: a relay has hundreds of request paths.
            self.stacks.clear();
            self.requests.clear();
        }
        let site = StackSite::of(stack.frames.into(), &self.rules);
        self.stacks.insert(stack.id, Arc::new(site));
    }

    /// One request (a recording's per-request input, before version 7): counted on its stack,
    /// and joined as [`SiteTable::apply_seen`] joins.
    pub fn apply_event(&mut self, event: &SiteEvent) {
        if !self.stacks.contains_key(&event.stack) {
            // Its stack was dropped with the bound (or the recording started after it).
            return;
        }
        *self.requests.entry(event.stack).or_default() += 1;
        self.apply_seen(event);
    }

    /// Requests counted on a stack.
    pub fn apply_requests(&mut self, counted: &SiteRequests) {
        if self.stacks.contains_key(&counted.stack) {
            *self.requests.entry(counted.stack).or_default() += counted.requests;
        }
    }

    /// A request that obtained a connection's or a response's: a connection keeps its
    /// latest, a response waits for the next sample's streams.
    pub fn apply_seen(&mut self, event: &SiteEvent) {
        if !self.stacks.contains_key(&event.stack) {
            return;
        }
        let obtained = Obtained {
            at_ns: event.at_ns,
            stack: event.stack,
        };
        match event.key {
            SiteKey::Connection { fd } => {
                let last = self.by_conn.entry((event.pid, fd)).or_insert(obtained);
                if last.at_ns <= obtained.at_ns {
                    *last = obtained;
                }
            }
            SiteKey::H2Response { response } => self.push_response((event.pid, response), obtained),
        }
    }

    /// HTTP/2 responses and the requests that obtained them: each waits for the next sample's
    /// streams.
    pub fn apply_responses(&mut self, responses: &[SiteResponse]) {
        for r in responses {
            if self.stacks.contains_key(&r.stack) {
                let obtained = Obtained {
                    at_ns: r.at_ns,
                    stack: r.stack,
                };
                self.push_response((r.pid, r.response), obtained);
            }
        }
    }

    fn push_response(&mut self, key: Response, obtained: Obtained) {
        if self.recent.len() >= MAX_RESPONSES {
            self.recent.pop_front();
        }
        self.recent.push_back((key, obtained));
        self.fresh = (self.fresh + 1).min(self.recent.len());
    }

    /// The site of the last request on the connection `fd` of `pid` opened at `opened_ns`: a
    /// request before that was on an older connection with the same fd. (`opened_ns` is None
    /// for a connection open before tracing started, whose open time is not known.)
    pub fn for_connection(&self, pid: u32, fd: i32, opened_ns: Option<u64>) -> Option<&StackSite> {
        let obtained = self.by_conn.get(&(pid, fd))?;
        if opened_ns.is_some_and(|opened| obtained.at_ns < opened) {
            return None;
        }
        self.stacks.get(&obtained.stack).map(|s| &**s)
    }

    /// The site that obtained the HTTP/2 response at `response` in `pid`, whose stream was
    /// open at the last sample.
    pub fn for_response(&self, pid: u32, response: u64) -> Option<&StackSite> {
        let obtained = self.by_response.get(&(pid, response))?;
        self.stacks.get(&obtained.stack).map(|s| &**s)
    }

    /// Joins the responses to the streams open at a sample (`open`: their (pid, response)),
    /// forgets the sites of streams no longer open, and the responses older than `before_ns`
    /// (a response's stream shows in the sample after it). Each response is compared with
    /// the open streams once, at the first sample after it came. An open stream still
    /// without one is either one whose response came after this sample's drain (the next
    /// sample's new responses have it) or one that no sample showed before (its connection
    /// found late): a stream so at two samples in a row is searched for in all of them, once.
    pub fn match_responses(&mut self, open: &HashSet<Response>, before_ns: u64) {
        self.by_response.retain(|key, _| open.contains(key));
        self.searched.retain(|key| open.contains(key));
        let older = self.recent.len() - self.fresh;
        if !open.is_empty() {
            // Oldest first: of two responses at one address, the newer is the stream's.
            for &(key, obtained) in self.recent.range(older..) {
                if open.contains(&key) {
                    self.by_response.insert(key, obtained);
                }
            }
        }
        let (search, missed): (HashSet<Response>, HashSet<Response>) = open
            .iter()
            .filter(|key| !self.by_response.contains_key(key) && !self.searched.contains(key))
            .partition(|key| self.missed.contains(key));
        if !search.is_empty() {
            for &(key, obtained) in self.recent.range(..older) {
                if search.contains(&key) {
                    self.by_response.insert(key, obtained);
                }
            }
            self.searched.extend(search);
        }
        self.missed = missed;
        self.fresh = 0;
        while self
            .recent
            .front()
            .is_some_and(|(_, o)| o.at_ns < before_ns)
        {
            self.recent.pop_front();
        }
    }

    /// Requests per call site over the session (stacks with the same call site add up).
    pub fn requests_by_site(&self) -> BTreeMap<CallSite, u64> {
        let mut out = BTreeMap::new();
        for (id, n) in &self.requests {
            if let Some(site) = self.stacks.get(id).and_then(|s| s.call_site.clone()) {
                *out.entry(site).or_default() += n;
            }
        }
        out
    }

    /// A stack of each call site (the one seen most often), for a site's full stack.
    pub fn stack_of(&self, call_site: &CallSite) -> Option<&StackSite> {
        self.stacks
            .iter()
            .filter(|(_, s)| s.call_site.as_ref() == Some(call_site))
            .max_by_key(|(id, _)| (self.requests.get(id).copied().unwrap_or(0), **id))
            .map(|(_, s)| &**s)
    }

    /// What exited processes obtained went with them.
    pub fn retain_pids(&mut self, alive: &HashSet<u32>) {
        self.by_conn.retain(|(pid, _), _| alive.contains(pid));
        self.by_response.retain(|(pid, _), _| alive.contains(pid));
        self.searched.retain(|(pid, _)| alive.contains(pid));
        self.missed.retain(|(pid, _)| alive.contains(pid));
        let older = self.recent.len() - self.fresh;
        let (mut at, mut fresh) = (0, 0);
        self.recent.retain(|((pid, _), _)| {
            let keep = alive.contains(pid);
            fresh += usize::from(keep && at >= older);
            at += 1;
            keep
        });
        self.fresh = fresh;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str, line: u32) -> SiteFrame {
        SiteFrame {
            function: function.into(),
            file: file.into(),
            line,
            library: is_library(function, Some("example.com/relay")),
        }
    }

    /// The transport's frames, then the relay's: a wrapper, the adaptor, the handler.
    fn relay_stack() -> Vec<SiteFrame> {
        vec![
            frame(
                "net/http.(*Transport).roundTrip",
                "/go/src/net/http/transport.go",
                590,
            ),
            frame(
                "net/http.(*Transport).RoundTrip",
                "/go/src/net/http/roundtrip.go",
                17,
            ),
            frame("net/http.send", "/go/src/net/http/client.go", 259),
            frame("net/http.(*Client).Do", "/go/src/net/http/client.go", 590),
            frame("main.doRequest", "/src/relay/client.go", 40),
            frame("main.relayImage", "/src/relay/image.go", 829),
            frame("main.handle.func1", "/src/relay/main.go", 77),
            frame(
                "net/http.HandlerFunc.ServeHTTP",
                "/go/src/net/http/server.go",
                2166,
            ),
            frame("runtime.goexit", "/go/src/runtime/asm_amd64.s", 1700),
        ]
    }

    fn site(function: &str, file: &str, line: u32) -> Option<CallSite> {
        Some(CallSite {
            function: function.into(),
            file: file.into(),
            line,
        })
    }

    #[test]
    fn the_standard_library_is_told_apart_by_the_first_path_element() {
        for std in [
            "net/http.(*persistConn).roundTrip",
            "runtime.goexit",
            "net/http/internal/http2.(*ClientConn).roundTrip",
            "vendor/golang.org/x/net/http2/hpack.(*Decoder).Write",
            "internal/poll.(*FD).Read",
            "golang.org/x/net/http2.(*Transport).RoundTrip",
            "golang.org/x/net/http2.(*ClientConn).roundTrip.func1",
            "type:.eq.net/http.Request",
            "sync.(*Once).doSlow",
        ] {
            assert!(is_library(std, None), "{std}");
            assert!(is_library(std, Some("github.com/x/relay")), "{std}");
        }
        for app in [
            "main.main",
            "main.(*relay).do.func2",
            "main.Do[...]",
            "github.com/songquanpeng/one-api/relay/adaptor.DoRequestHelper",
            "gopkg.in/yaml.v3.Unmarshal",
            "golang.org/x/net/proxy.Dial",
            "golang.org/x/net/http2x.Foo",
        ] {
            assert!(!is_library(app, None), "{app}");
        }
        // A main module without a dot in its path: its packages are the application's.
        assert!(!is_library(
            "one-api/relay/controller.RelayImage",
            Some("one-api")
        ));
        assert!(is_library("one-api/relay/controller.RelayImage", None));
        assert!(!is_library("one-api.Foo", Some("one-api")));
        assert!(is_library("one-apix/foo.Bar", Some("one-api")));
        assert!(is_library("runtime.main", Some("")));
    }

    #[test]
    fn the_call_site_is_the_innermost_application_frame_and_wrappers_can_be_skipped() {
        let frames: Arc<[SiteFrame]> = relay_stack().into();
        let plain = StackSite::of(Arc::clone(&frames), &SiteRules::default());
        assert_eq!(
            plain.call_site,
            site("main.doRequest", "/src/relay/client.go", 40)
        );
        assert_eq!(
            plain.stack,
            [
                "main.doRequest /src/relay/client.go:40",
                "main.relayImage /src/relay/image.go:829",
                "main.handle.func1 /src/relay/main.go:77",
            ]
        );
        let rules = SiteRules::new(&["^main\\.doRequest$".to_owned()]).unwrap();
        let skipped = StackSite::of(Arc::clone(&frames), &rules);
        assert_eq!(
            skipped.call_site,
            site("main.relayImage", "/src/relay/image.go", 829)
        );
        assert_eq!(skipped.stack.len(), 2);
        // Skipping everything leaves no call site, never a library frame.
        let all = SiteRules::new(&["^main\\.".to_owned()]).unwrap();
        let none = StackSite::of(frames, &all);
        assert_eq!(none.call_site, None);
        assert!(none.stack.is_empty());
        let err = SiteRules::new(&["(".to_owned()]).unwrap_err();
        assert!(
            err.starts_with("--site-skip \"(\" is not a regular expression"),
            "{err}"
        );
    }

    #[test]
    fn the_stack_shows_at_most_eight_application_frames() {
        let mut frames = vec![frame("net/http.(*Client).Do", "/go/client.go", 1)];
        frames.extend((0..12).map(|i| frame(&format!("main.f{i}"), "/src/a.go", i)));
        let s = StackSite::of(frames.into(), &SiteRules::default());
        assert_eq!(s.stack.len(), STACK_FRAMES);
        assert_eq!(s.stack[0], "main.f0 /src/a.go:0");
        assert_eq!(s.stack[7], "main.f7 /src/a.go:7");
    }

    fn table_with_two_stacks() -> SiteTable {
        let mut t = SiteTable::default();
        t.apply_stack(SiteStack {
            id: 1,
            frames: relay_stack(),
        });
        let mut other = relay_stack();
        other[4] = frame("main.relayAudio", "/src/relay/audio.go", 12);
        t.apply_stack(SiteStack {
            id: 2,
            frames: other,
        });
        t
    }

    fn h1(pid: u32, fd: i32, stack: u32, at_ns: u64) -> SiteEvent {
        SiteEvent {
            pid,
            key: SiteKey::Connection { fd },
            stack,
            at_ns,
        }
    }

    #[test]
    fn a_connection_takes_the_site_of_its_last_request_and_not_an_older_connections() {
        let mut t = table_with_two_stacks();
        // Three requests on one pooled connection (fd 7 of pid 5, opened at 100): the last
        // one's site is the connection's.
        t.apply_event(&h1(5, 7, 1, 110));
        t.apply_event(&h1(5, 7, 1, 120));
        t.apply_event(&h1(5, 7, 2, 130));
        let s = t.for_connection(5, 7, Some(100)).unwrap();
        assert_eq!(s.call_site.as_ref().unwrap().function, "main.relayAudio");
        // A newer connection that got fd 7 and carried no request (seen) yet has no site.
        assert_eq!(t.for_connection(5, 7, Some(140)), None);
        // Another process's fd 7, another fd: nothing.
        assert_eq!(t.for_connection(6, 7, Some(100)), None);
        assert_eq!(t.for_connection(5, 8, Some(100)), None);
        // A connection open before tracing started takes whatever request came on its fd.
        assert!(t.for_connection(5, 7, None).is_some());
        // Every request counts towards its site's total.
        let totals = t.requests_by_site();
        let by_name: Vec<(String, u64)> = totals
            .iter()
            .map(|(s, n)| (s.function.clone(), *n))
            .collect();
        assert_eq!(
            by_name,
            [
                ("main.doRequest".to_owned(), 2),
                ("main.relayAudio".to_owned(), 1)
            ]
        );
        assert_eq!(
            t.stack_of(&CallSite {
                function: "main.doRequest".into(),
                file: "/src/relay/client.go".into(),
                line: 40
            })
            .unwrap()
            .frames
            .len(),
            9
        );
        t.retain_pids(&HashSet::from([6]));
        assert_eq!(t.for_connection(5, 7, None), None);
    }

    #[test]
    fn requests_read_at_samples_count_apart_from_the_sites_they_leave() {
        let mut t = table_with_two_stacks();
        // A connection's last request as a sample reads it: no request counted.
        t.apply_seen(&h1(5, 7, 1, 120));
        assert!(t.requests_by_site().is_empty());
        assert_eq!(
            t.for_connection(5, 7, Some(100))
                .and_then(|s| s.call_site.clone())
                .map(|c| c.line),
            Some(40)
        );
        // An older request on the same fd (read late, an older connection's) never replaces
        // a newer one; a newer one does.
        t.apply_seen(&h1(5, 7, 2, 110));
        assert_eq!(t.by_conn[&(5, 7)].stack, 1);
        t.apply_seen(&h1(5, 7, 2, 130));
        assert_eq!(t.by_conn[&(5, 7)].stack, 2);
        // Counts add up per stack; a stack not known counts nothing.
        for (stack, requests) in [(1, 40), (2, 2), (1, 3), (9, 100)] {
            t.apply_requests(&SiteRequests {
                pid: 5,
                stack,
                requests,
            });
        }
        let totals: Vec<u64> = t.requests_by_site().into_values().collect();
        assert_eq!(totals, [43, 2]);
    }

    fn h2(response: u64, at_ns: u64) -> SiteEvent {
        SiteEvent {
            pid: 5,
            key: SiteKey::H2Response { response },
            stack: 2,
            at_ns,
        }
    }

    fn open(keys: &[(u32, u64)]) -> HashSet<(u32, u64)> {
        keys.iter().copied().collect()
    }

    #[test]
    fn an_h2_response_joins_its_stream_at_a_sample_and_is_forgotten_once_the_stream_is_gone() {
        let mut t = table_with_two_stacks();
        t.apply_event(&h2(0xc000_1000, 10));
        t.apply_event(&h2(0xc000_2000, 20));
        // Joined at a sample, to the streams open then.
        assert_eq!(t.for_response(5, 0xc000_1000), None);
        t.match_responses(&open(&[(5, 0xc000_1000)]), 0);
        assert_eq!(
            t.for_response(5, 0xc000_1000)
                .and_then(|s| s.call_site.clone())
                .map(|c| c.line),
            Some(12)
        );
        assert_eq!(t.for_response(6, 0xc000_1000), None);
        assert_eq!(t.for_response(5, 0xc000_3000), None);
        // The second one's stream shows a sample later, and again at the next: searched for
        // then, still young enough to be found.
        t.match_responses(&open(&[(5, 0xc000_1000), (5, 0xc000_2000)]), 15);
        assert!(t.for_response(5, 0xc000_2000).is_none());
        t.match_responses(&open(&[(5, 0xc000_1000), (5, 0xc000_2000)]), 15);
        assert!(t.for_response(5, 0xc000_2000).is_some());
        assert!(t.for_response(5, 0xc000_1000).is_some());
        // The first one's stream ended: its site goes; the second's stays while it is open,
        // however old.
        t.match_responses(&open(&[(5, 0xc000_2000)]), 25);
        assert!(t.for_response(5, 0xc000_1000).is_none());
        assert!(t.for_response(5, 0xc000_2000).is_some());
        // A response older than the samples look back is not found for a stream shown later.
        t.apply_event(&h2(0xc000_3000, 30));
        t.match_responses(&open(&[(5, 0xc000_2000)]), 31);
        for _ in 0..2 {
            t.match_responses(&open(&[(5, 0xc000_2000), (5, 0xc000_3000)]), 31);
        }
        assert!(t.for_response(5, 0xc000_3000).is_none());
        assert!(t.for_response(5, 0xc000_2000).is_some());
    }

    #[test]
    fn of_two_responses_at_one_address_the_newer_is_the_streams() {
        let mut t = table_with_two_stacks();
        let stack_line = |t: &SiteTable| {
            t.for_response(5, 0xc000_1000)
                .and_then(|s| s.call_site.clone())
                .map(|c| c.line)
        };
        // Both came before the stream was shown: in one sample's new responses...
        t.apply_event(&SiteEvent {
            stack: 1,
            ..h2(0xc000_1000, 10)
        });
        t.apply_event(&h2(0xc000_1000, 20));
        t.match_responses(&open(&[(5, 0xc000_1000)]), 0);
        assert_eq!(stack_line(&t), Some(12));
        // ... and in the older ones, searched for a stream the sample after them shows.
        let mut t = table_with_two_stacks();
        t.apply_event(&SiteEvent {
            stack: 1,
            ..h2(0xc000_1000, 10)
        });
        t.apply_event(&h2(0xc000_1000, 20));
        t.match_responses(&open(&[]), 0);
        t.match_responses(&open(&[(5, 0xc000_1000)]), 0);
        assert_eq!(stack_line(&t), None);
        t.match_responses(&open(&[(5, 0xc000_1000)]), 0);
        assert_eq!(stack_line(&t), Some(12));
        // A later response at the address replaces the site of the stream matched before.
        t.apply_event(&SiteEvent {
            stack: 1,
            ..h2(0xc000_1000, 30)
        });
        t.match_responses(&open(&[(5, 0xc000_1000)]), 0);
        assert_eq!(stack_line(&t), Some(40));
    }

    #[test]
    fn a_response_that_came_after_a_samples_drain_joins_at_the_next_sample_without_a_search() {
        let mut t = table_with_two_stacks();
        t.apply_event(&h2(0xc000_1000, 10));
        t.match_responses(&open(&[]), 0);
        // The stream shows with a response whose record is still in the ring.
        t.match_responses(&open(&[(5, 0xc000_2000)]), 0);
        assert!(t.missed.contains(&(5, 0xc000_2000)));
        t.apply_event(&h2(0xc000_2000, 20));
        t.match_responses(&open(&[(5, 0xc000_2000)]), 0);
        assert!(t.for_response(5, 0xc000_2000).is_some());
        assert!(t.missed.is_empty() && t.searched.is_empty());
    }

    #[test]
    fn a_stream_searched_in_vain_finds_a_response_that_comes_later() {
        let mut t = table_with_two_stacks();
        t.apply_event(&h2(0xc000_1000, 10));
        for _ in 0..2 {
            t.match_responses(&open(&[(5, 0xc000_9000)]), 0);
        }
        assert!(t.for_response(5, 0xc000_9000).is_none());
        assert!(t.searched.contains(&(5, 0xc000_9000)));
        t.apply_event(&h2(0xc000_9000, 20));
        t.match_responses(&open(&[(5, 0xc000_9000)]), 0);
        assert!(t.for_response(5, 0xc000_9000).is_some());
        // Gone with its stream.
        t.match_responses(&open(&[]), 0);
        assert!(t.searched.is_empty() && t.missed.is_empty() && t.by_response.is_empty());
    }

    #[test]
    fn an_exited_process_takes_its_responses_with_it() {
        let mut t = table_with_two_stacks();
        t.apply_event(&h2(0xc000_1000, 10));
        t.match_responses(&open(&[]), 0);
        t.apply_event(&SiteEvent {
            pid: 6,
            ..h2(0xc000_2000, 20)
        });
        t.apply_event(&h2(0xc000_3000, 30));
        t.retain_pids(&HashSet::from([5]));
        assert_eq!(t.recent.len(), 2);
        assert_eq!(t.fresh, 1);
        let streams = open(&[(5, 0xc000_1000), (5, 0xc000_3000), (6, 0xc000_2000)]);
        t.match_responses(&streams, 0);
        assert!(t.for_response(5, 0xc000_3000).is_some());
        t.match_responses(&streams, 0);
        assert!(t.for_response(5, 0xc000_1000).is_some());
        assert!(t.for_response(5, 0xc000_3000).is_some());
        assert!(t.for_response(6, 0xc000_2000).is_none());
    }

    #[test]
    fn a_request_of_an_unknown_stack_counts_nothing_and_the_response_bound_keeps_the_newest() {
        let mut t = table_with_two_stacks();
        t.apply_event(&h1(5, 7, 99, 10));
        assert_eq!(t.for_connection(5, 7, None), None);
        assert!(t.requests_by_site().is_empty());
        for i in 0..MAX_RESPONSES as u64 + 1 {
            t.apply_event(&SiteEvent {
                pid: 5,
                key: SiteKey::H2Response { response: i },
                stack: 1,
                at_ns: i,
            });
        }
        assert_eq!(t.recent.len(), MAX_RESPONSES);
        assert_eq!(t.fresh, MAX_RESPONSES);
        for _ in 0..2 {
            t.match_responses(&open(&[(5, 0), (5, MAX_RESPONSES as u64)]), 0);
        }
        assert!(t.for_response(5, MAX_RESPONSES as u64).is_some());
        assert!(t.for_response(5, 0).is_none());
    }

    #[test]
    fn rules_set_later_rename_the_stacks_already_seen() {
        let mut t = table_with_two_stacks();
        t.apply_event(&h1(5, 7, 1, 10));
        t.set_rules(SiteRules::new(&["doRequest".to_owned()]).unwrap());
        let s = t.for_connection(5, 7, None).unwrap();
        assert_eq!(s.call_site.as_ref().unwrap().line, 829);
    }
}
