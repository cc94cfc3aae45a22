// Command goscenarios is the relay of the Go layer's end-to-end test (tests/tests/h2_streams.rs,
// issues 12 and 13): a Go HTTP client that leaks HTTP/2 streams and HTTP/1.1 connections in
// known ways, each scenario against its own upstream address, and that reports for each
// scenario what it measured itself, never what a tracer says. Standard library only; the test
// builds it stripped with every Go of the matrix (`cargo xtask test`), by hand:
//
//	target/go-matrix/1.27.3/bin/go build -C tests/goscenarios -ldflags "-s -w" -o /tmp/goscenarios .
//	/tmp/goscenarios -port 18461 -report
//
// The upstreams run in a child process (this binary with the argument "upstream"), so the
// relay's sockets to them are all outbound, as a relay's are: TLS offering h2 on 127.0.0.41..48,
// plain HTTP/1.1 with a 1 s idle timeout on 127.0.0.51..53, all on -port.
//
// Scenarios, in the order they run (-scenario picks some; -n requests each):
//
//	never_read    .41  16 MiB body never read nor closed: a leaked stream per request (unread)
//	partial       .42  64 KiB read of an endless body, then dropped: a leaked stream per request (abandoned)
//	err429        .43  429 with a small body, neither read nor closed: 0 (END_STREAM ends it)
//	close_unread  .44  16 MiB body closed without reading: 0 (RST_STREAM)
//	correct       .45  read to EOF and closed: 0
//	multiplex     .46  like never_read, -multiplex requests at once on one connection (unread)
//	listening     .47  an endless body read as it trickles in: open streams, none leaked
//	wrapper       .48  never_read through doRequest, a helper every adaptor could call (unread)
//	h1_leak       .51  HTTP/1.1 429, body neither read nor closed: the connection stays checked
//	                   out, the upstream's idle close leaves it in CLOSE_WAIT (close_wait)
//	h1_correct    .52  HTTP/1.1, read to EOF and closed: 0
//	h1_wrapper    .53  h1_leak through doRequest (close_wait)
//
// Output, one line each on stdout: {"type":"start",...}; with -start-on-stdin, WAITING, then it
// waits for a line on stdin; per scenario a {"type":"scenario",...} line (see report); then
// SCENARIOS DONE. It then holds its leaks for -hold and exits. Scenarios run one after
// another; each one's count is the difference it made, once the process settled:
//   - open_streams: client streams open (goroutines parked in the client stream's writeRequest,
//     from a dump of every goroutine); leaked_streams is the same count for the leaking
//     scenarios, 0 for listening (its streams are being read);
//   - leaked_connections (HTTP/1.1): this process's sockets to the upstream still open
//     (ESTABLISHED or CLOSE_WAIT in /proc/self/net/tcp) after the upstream's idle timeout;
//   - connections: the distinct connections the requests got (httptrace);
//   - site: the frame that called client.Do, as runtime.CallersFrames names it (function, file,
//     line); each scenario's requests come from one line of its own. Through doRequest, site
//     is doRequest's line and site_outer the scenario's call of doRequest (what
//     `--site-skip doRequest` should name).
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// Beyond the Go client's 4 MiB stream window: a body never read holds its stream for good.
	bigBody = 16 << 20
	// What partial reads of its endless body before dropping it.
	partialRead = 64 << 10
	// No loop runs longer than this (an endless body, a trickle, a scenario).
	bound = 10 * time.Minute
)

// scenario is one way of handling a response, against its own upstream address.
type scenario struct {
	name string
	ip   string
	// "h2" (TLS, ALPN h2) or "h1" (plain HTTP/1.1).
	proto string
	// The reason a leak of this scenario gets; "" when it leaks nothing.
	reason string
	// Streams it leaves open that are not leaked (listening).
	listening bool
	run       func(e *env, base string)
}

var scenarios = []scenario{
	{name: "never_read", ip: "127.0.0.41", proto: "h2", reason: "unread", run: neverRead},
	{name: "partial", ip: "127.0.0.42", proto: "h2", reason: "abandoned", run: partial},
	{name: "err429", ip: "127.0.0.43", proto: "h2", run: err429},
	{name: "close_unread", ip: "127.0.0.44", proto: "h2", run: closeUnread},
	{name: "correct", ip: "127.0.0.45", proto: "h2", run: correct},
	{name: "multiplex", ip: "127.0.0.46", proto: "h2", reason: "unread", run: multiplex},
	{name: "listening", ip: "127.0.0.47", proto: "h2", listening: true, run: listening},
	{name: "wrapper", ip: "127.0.0.48", proto: "h2", reason: "unread", run: wrapper},
	{name: "h1_leak", ip: "127.0.0.51", proto: "h1", reason: "close_wait", run: h1Leak},
	{name: "h1_correct", ip: "127.0.0.52", proto: "h1", run: h1Correct},
	{name: "h1_wrapper", ip: "127.0.0.53", proto: "h1", reason: "close_wait", run: h1Wrapper},
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("goscenarios: ")
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		upstream(os.Args[2:])
		return
	}
	relay()
}

// Site is a frame as runtime.CallersFrames names it.
type Site struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

// report is one scenario's line: what the test expects the tracer to find on its host.
type report struct {
	Type              string `json:"type"`
	Scenario          string `json:"scenario"`
	Proto             string `json:"proto"`
	Host              string `json:"host"`
	Remote            string `json:"remote"`
	Requests          int    `json:"requests"`
	OpenStreams       int    `json:"open_streams"`
	LeakedStreams     int    `json:"leaked_streams"`
	LeakedConnections int    `json:"leaked_connections"`
	Reason            string `json:"reason"`
	Connections       int    `json:"connections"`
	Site              Site   `json:"site"`
	SiteOuter         *Site  `json:"site_outer"`
	// Before the tracer: run before WAITING (-before).
	Before bool `json:"before"`
}

// env is the relay's one client and what the current scenario's requests recorded.
type env struct {
	client   *http.Client
	port     int
	n        int
	parallel int

	// Open client streams when the last scenario settled.
	streams int

	mu     sync.Mutex
	proto  string
	sites  map[Site]bool
	outers map[Site]bool
	conns  map[string]bool
}

func relay() {
	port := flag.Int("port", 18461, "the upstreams' port (on every scenario's address)")
	only := flag.String("scenario", "", "comma-separated scenarios to run, in the listed order (default all)")
	before := flag.String("before", "", "comma-separated scenarios to run at once, before -start-on-stdin waits (leaks that predate a tracer)")
	n := flag.Int("n", 3, "requests per scenario")
	parallel := flag.Int("multiplex", 8, "concurrent requests of the multiplex scenario")
	startOnStdin := flag.Bool("start-on-stdin", false, "print WAITING and wait for a line on stdin before the scenarios (lets a test attach a tracer first)")
	warm := flag.Bool("warm", false, "make one correct request to each HTTP/2 scenario's upstream before waiting, so the connections predate a tracer")
	hold := flag.Duration("hold", 5*time.Minute, "how long to hold the leaks after the scenarios")
	periodic := flag.Bool("report", false, "print the open client streams every second (for use by hand)")
	trickle := flag.Duration("trickle", time.Second, "the listening scenario's upstream sends an event this often")
	flag.Parse()

	selected := pick(*only)
	early := pick(*before)
	if *before == "" {
		early = nil
	}
	// A scenario runs once: before the wait, or after it.
	selected = without(selected, early)
	upstreamPid := startUpstream(*port, *trickle)
	e := &env{
		client: &http.Client{Transport: &http.Transport{
			// As every transport of one-api's fork ezlinkai: h2 with any TLS upstream offering it.
			ForceAttemptHTTP2:     true,
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: true},
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			// No client timeout: it would end the leaks this program is for.
		}},
		port:     *port,
		n:        *n,
		parallel: *parallel,
	}
	say(map[string]any{"type": "start", "pid": os.Getpid(), "upstream_pid": upstreamPid, "go": runtime.Version()})
	if *periodic {
		go func() {
			for start := time.Now(); time.Since(start) < bound+*hold; time.Sleep(time.Second) {
				say(map[string]any{"type": "open_streams", "open_streams": openStreams()})
			}
		}()
	}
	e.streams = settle("start", time.Second, 0, openStreams)
	for _, s := range early {
		e.scenario(s, true)
	}
	if *warm {
		for _, s := range selected {
			if s.proto == "h2" {
				e.warm(s)
			}
		}
		e.streams = settle("warming", time.Second, 0, openStreams)
	}
	if *startOnStdin {
		fmt.Println("WAITING")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			log.Fatalf("reading the start line from stdin: %v", err)
		}
	}
	for _, s := range selected {
		e.scenario(s, false)
	}
	fmt.Println("SCENARIOS DONE")
	time.Sleep(*hold)
}

// pick is the scenarios named in list, in the table's order; all of them for "".
func pick(list string) []scenario {
	if list == "" {
		return scenarios
	}
	want := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		want[strings.TrimSpace(name)] = true
	}
	var out []scenario
	for _, s := range scenarios {
		if want[s.name] {
			out = append(out, s)
			delete(want, s.name)
		}
	}
	for name := range want {
		log.Fatalf("unknown scenario %q", name)
	}
	return out
}

func without(all, drop []scenario) []scenario {
	var out []scenario
	for _, s := range all {
		keep := true
		for _, d := range drop {
			keep = keep && d.name != s.name
		}
		if keep {
			out = append(out, s)
		}
	}
	return out
}

func say(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(line))
}

// base is a scenario's upstream URL.
func (e *env) base(s scenario) string {
	scheme := "https"
	if s.proto == "h1" {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s:%d", scheme, s.ip, e.port)
}

// scenario runs one scenario and prints its report once the process settled.
func (e *env) scenario(s scenario, before bool) {
	watchdog := time.AfterFunc(time.Minute, func() { log.Fatalf("scenario %s did not finish within a minute", s.name) })
	defer watchdog.Stop()
	remote := fmt.Sprintf("%s:%d", s.ip, e.port)
	streamsBefore := e.streams
	e.mu.Lock()
	e.proto, e.sites, e.outers, e.conns = s.proto, map[Site]bool{}, map[Site]bool{}, map[string]bool{}
	e.mu.Unlock()
	s.run(e, e.base(s))
	r := report{
		Type: "scenario", Scenario: s.name, Proto: s.proto, Host: s.ip, Remote: remote,
		Requests: e.n, Before: before,
	}
	if s.name == "multiplex" {
		r.Requests = e.parallel
	}
	if s.proto == "h2" {
		e.streams = settle(s.name, time.Second, 0, openStreams)
		r.OpenStreams = e.streams - streamsBefore
		if !s.listening {
			r.LeakedStreams = r.OpenStreams
		}
	} else {
		// The upstream closes idle connections after 1 s: wait past it.
		r.LeakedConnections = settle(s.name, 1500*time.Millisecond, 2500*time.Millisecond,
			func() int { return sockets(s.ip, e.port) })
	}
	leaked := r.LeakedStreams + r.LeakedConnections
	if leaked > 0 {
		r.Reason = s.reason
	}
	if (leaked > 0) != (s.reason != "") {
		log.Fatalf("scenario %s: %d leaked, but it is meant to leak %v", s.name, leaked, s.reason != "")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r.Connections = len(e.conns)
	r.Site = only(s.name, "site", e.sites)
	if len(e.outers) > 0 {
		outer := only(s.name, "outer site", e.outers)
		r.SiteOuter = &outer
	}
	say(r)
}

// only is the one site a scenario's requests came from.
func only(scenario, what string, sites map[Site]bool) Site {
	if len(sites) != 1 {
		log.Fatalf("scenario %s: its requests came from %d %ss, want 1: %v", scenario, len(sites), what, sites)
	}
	for s := range sites {
		return s
	}
	return Site{}
}

// settle polls count until it stays the same for quiet (and at least minWait passed), and
// returns it; a count that never settles within 20 s is fatal.
func settle(what string, quiet, minWait time.Duration, count func() int) int {
	start := time.Now()
	last, since := count(), time.Now()
	for time.Since(start) < 20*time.Second {
		time.Sleep(100 * time.Millisecond)
		if c := count(); c != last {
			last, since = c, time.Now()
		}
		if time.Since(since) >= quiet && time.Since(start) >= minWait {
			return last
		}
	}
	log.Fatalf("%s: the count did not settle within 20 s (last %d)", what, last)
	return 0
}

// openStreams counts this process's open HTTP/2 client streams: one goroutine per stream
// stays parked in the client stream's writeRequest until the stream ends (net/http's
// http2clientStream before Go 1.27, net/http/internal/http2.clientStream since).
func openStreams() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	open := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "clientStream).writeRequest(") {
			open++
		}
	}
	return open
}

// sockets counts the open TCP sockets (ESTABLISHED or CLOSE_WAIT) whose peer is ip:port, from
// /proc/self/net/tcp. That file lists the network namespace's sockets, but only this process
// connects to its upstreams.
func sockets(ip string, port int) int {
	data, err := os.ReadFile("/proc/self/net/tcp")
	if err != nil {
		log.Fatal(err)
	}
	a := net.ParseIP(ip).To4()
	// The kernel prints the address as the u32 it stores (network order, read little-endian).
	peer := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], port)
	open := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 01 is ESTABLISHED, 08 CLOSE_WAIT.
		if len(f) > 3 && f[2] == peer && (f[3] == "01" || f[3] == "08") {
			open++
		}
	}
	return open
}

// request is a GET of url whose connection is recorded.
func (e *env) request(url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		e.mu.Lock()
		e.conns[info.Conn.LocalAddr().String()] = true
		e.mu.Unlock()
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}

// got checks a response and records where it was asked for.
func (e *env) got(resp *http.Response, site Site, outer *Site, err error) *http.Response {
	if err != nil {
		log.Fatalf("%s: %v", site.Function, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	want := 1
	if e.proto == "h2" {
		want = 2
	}
	if resp.ProtoMajor != want {
		log.Fatalf("%s: got %s, want HTTP/%d", site.Function, resp.Proto, want)
	}
	e.sites[site] = true
	if outer != nil {
		e.outers[*outer] = true
	}
	return resp
}

// at passes on what client.Do returned, with the line it was called from: in
// `resp, site, err := at(e.client.Do(req))` that is the line of the client.Do call.
func at(resp *http.Response, err error) (*http.Response, Site, error) {
	return resp, callerOf("main.at"), err
}

// atOuter is at for doRequest's results: the line of the doRequest call.
func atOuter(resp *http.Response, site Site, err error) (*http.Response, Site, Site, error) {
	return resp, site, callerOf("main.atOuter"), err
}

// callerOf is the frame that called function (inlined frames included).
func callerOf(function string) Site {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	for {
		frame, more := frames.Next()
		if frame.Function == function {
			caller, _ := frames.Next()
			return Site{Function: caller.Function, File: caller.File, Line: caller.Line}
		}
		if !more {
			log.Fatalf("%s is not on the stack", function)
		}
	}
}

// doRequest is the kind of helper a relay's adaptors all call (`--site-skip doRequest`).
func doRequest(client *http.Client, req *http.Request) (*http.Response, Site, error) {
	return at(client.Do(req))
}

func neverRead(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/big")))
		_ = e.got(resp, site, nil, err)
	}
}

func partial(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/endless")))
		body := e.got(resp, site, nil, err).Body
		if _, err := io.ReadFull(body, make([]byte, partialRead)); err != nil {
			log.Fatalf("partial: %v", err)
		}
	}
}

func err429(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/429")))
		if e.got(resp, site, nil, err).StatusCode != http.StatusTooManyRequests {
			log.Fatalf("err429: status %s", resp.Status)
		}
	}
}

func closeUnread(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/big")))
		e.got(resp, site, nil, err).Body.Close()
	}
}

func correct(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/big")))
		drain(e.got(resp, site, nil, err))
	}
}

func drain(resp *http.Response) {
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		log.Fatalf("reading a body: %v", err)
	}
	resp.Body.Close()
}

// multiplex opens the connection with one correct request, then leaks e.parallel streams on
// it at once.
func multiplex(e *env, base string) {
	e.warmOne(base)
	var wg sync.WaitGroup
	for i := 0; i < e.parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, site, err := at(e.client.Do(e.request(base + "/big")))
			_ = e.got(resp, site, nil, err)
		}()
	}
	wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.conns) != 1 {
		log.Fatalf("multiplex: the streams went over %d connections, want 1: %v", len(e.conns), e.conns)
	}
}

// warm makes one correct request to a scenario's upstream, outside any scenario's counts.
func (e *env) warm(s scenario) {
	e.mu.Lock()
	e.proto, e.sites, e.outers, e.conns = s.proto, map[Site]bool{}, map[Site]bool{}, map[string]bool{}
	e.mu.Unlock()
	e.warmOne(e.base(s))
}

// warmOne opens (or reuses) the connection to base with a request read to its end. Its site
// is not the scenario's: it is left out of the record.
func (e *env) warmOne(base string) {
	resp, err := e.client.Do(e.request(base + "/small"))
	if err != nil {
		log.Fatalf("warming %s: %v", base, err)
	}
	drain(resp)
}

func listening(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/trickle")))
		body := e.got(resp, site, nil, err).Body
		go func() {
			// Read as the events trickle in, until the upstream stops (after `bound`).
			_, _ = io.Copy(io.Discard, body)
			body.Close()
		}()
	}
}

func wrapper(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, outer, err := atOuter(doRequest(e.client, e.request(base+"/big")))
		_ = e.got(resp, site, &outer, err)
	}
}

func h1Leak(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/429")))
		if e.got(resp, site, nil, err).StatusCode == http.StatusOK {
			log.Fatalf("h1_leak: status %s", resp.Status)
		}
		// An early return on a non-200: the body is neither read nor closed.
	}
}

func h1Correct(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, err := at(e.client.Do(e.request(base + "/small")))
		drain(e.got(resp, site, nil, err))
	}
}

func h1Wrapper(e *env, base string) {
	for i := 0; i < e.n; i++ {
		resp, site, outer, err := atOuter(doRequest(e.client, e.request(base+"/429")))
		if e.got(resp, site, &outer, err).StatusCode == http.StatusOK {
			log.Fatalf("h1_wrapper: status %s", resp.Status)
		}
	}
}

// upstreamStdin is the upstreams' stdin, open while this process lives.
var upstreamStdin io.WriteCloser

// startUpstream starts this binary as the upstreams' process and waits until it listens.
// It dies with this process: SIGKILL at its parent's death, and exit at the end of its stdin.
func startUpstream(port int, trickle time.Duration) int {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(self, "upstream", "-port", fmt.Sprint(port), "-trickle", trickle.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	// Kept for the life of this process: its close (a finalizer, or exit) ends the upstreams.
	var err2 error
	if upstreamStdin, err2 = cmd.StdinPipe(); err2 != nil {
		log.Fatal(err2)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatalf("starting the upstreams: %v", err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "READY" {
			err = fmt.Errorf("it printed %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			log.Fatalf("the upstreams did not start: %v", err)
		}
	case <-time.After(10 * time.Second):
		log.Fatal("the upstreams did not start within 10 s")
	}
	return cmd.Process.Pid
}

// upstream serves every scenario's address until its stdin ends.
func upstream(args []string) {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	port := fs.Int("port", 18461, "port on every scenario's address")
	trickle := fs.Duration("trickle", time.Second, "how often /trickle sends an event")
	_ = fs.Parse(args)

	chunk := make([]byte, 32<<10)
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(bigBody))
		for sent := 0; sent < bigBody; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/endless", func(w http.ResponseWriter, r *http.Request) {
		// Blocks once the stream's window is full, until the client resets or goes away.
		for start := time.Now(); time.Since(start) < bound; {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/trickle", func(w http.ResponseWriter, r *http.Request) {
		for start := time.Now(); time.Since(start) < bound; time.Sleep(*trickle) {
			if _, err := w.Write([]byte("data: tick\n\n")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/429", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":"rate limited"}`))
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	})
	cert := selfSigned()
	for _, s := range scenarios {
		ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", s.ip, *port))
		if err != nil {
			log.Fatalf("upstream for %s: %v", s.name, err)
		}
		if s.proto == "h1" {
			// As the fixture's providers: idle connections closed after 1 s, so an unclosed body
			// leaves the relay's socket in CLOSE_WAIT.
			srv := &http.Server{Handler: mux, IdleTimeout: time.Second}
			go srv.Serve(ln)
			continue
		}
		srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2", "http/1.1"},
		}}
		go srv.ServeTLS(ln, "", "")
	}
	fmt.Println("READY")
	// The relay holds the other end of stdin: its end (the relay's exit) ends this process.
	_, _ = io.Copy(io.Discard, os.Stdin)
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "goscenarios.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	for _, s := range scenarios {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(s.ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
