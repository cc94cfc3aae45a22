// gosites is the call-site fixture of issue 13: a Go program that makes HTTP/1.1 and HTTP/2
// requests from distinct lines of its own code, against servers it runs in-process on
// 127.0.0.61-67, and prints for each scenario the line that made its requests, measured with
// runtime.Callers next to the call (the ground truth a tracer's `call_site` must equal), with
// how many requests it made there and how many leak. Standard library only; the e2e test
// (tests/tests/sites.rs) builds it stripped with toolchains of the Go matrix:
//
//	target/go-matrix/1.27.3/bin/go build -C tests/gosites -ldflags "-s -w" -o /tmp/gosites .
//
// It prints WAITING, waits for a line on stdin (so a tracer can attach first), runs every
// scenario once, prints one JSON line per scenario and DONE, then holds its connections until
// killed.
//
// Scenarios:
//
//	h1_unread     127.0.0.61  1 MiB body never read nor closed: one leaked connection per request (unread)
//	h1_closewait  127.0.0.62  small body, server closes: one leaked connection per request (close_wait)
//	h1_correct    127.0.0.63  read to EOF and closed: pooled, 0 leaks
//	h1_reused     127.0.0.64  requests read correctly, then one never read on the same pooled
//	                          connection: 1 leak, whose site is the last request's line
//	h1_wrapper    127.0.0.65  through doRequest, a wrapper: the site is the wrapper's caller
//	                          with --site-skip 'main\.doRequest$' (printed as the scenario's line)
//	h1_churned    127.0.0.68  a request read to EOF, its connection closed and its persistConn
//	                          collected, then one never read on a new connection (whose
//	                          persistConn may take the old one's address, and whose fd differs
//	                          from the old one's): each leak names the second line, the closed
//	                          connections' requests stay the first line's, unleaked
//	h2_never_read 127.0.0.66  HTTP/2 over TLS, 16 MiB never read: one leaked stream per request
//	h2_correct    127.0.0.67  HTTP/2 over TLS, read to EOF and closed: 0 leaks
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
	"os"
	"runtime"
	"time"
)

// Site is a line of this program that made requests, as runtime.Callers names it.
type Site struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

// Result is one scenario's ground truth.
type Result struct {
	Scenario string `json:"scenario"`
	Proto    string `json:"proto"`
	Host     string `json:"host"`
	Site     Site   `json:"site"`
	// Requests made at Site, and how many of them leak.
	Requests int `json:"requests"`
	Leaks    int `json:"leaks"`
	// Requests made elsewhere in the scenario (h1_reused's correct ones), at OtherSite.
	OtherRequests int   `json:"other_requests"`
	OtherSite     *Site `json:"other_site,omitempty"`
}

// mark records the line it is called from and returns "": used as `client.Get(url +
// mark(&site))`, so the site is the line of the Get call itself.
//
//go:noinline
func mark(site *Site) string {
	pcs := make([]uintptr, 1)
	runtime.Callers(2, pcs)
	frame, _ := runtime.CallersFrames(pcs).Next()
	*site = Site{Function: frame.Function, File: frame.File, Line: frame.Line}
	return ""
}

var (
	n     = flag.Int("n", 3, "requests per scenario")
	bench = flag.Int("bench", 0, "after DONE, this many more correct HTTP/1.1 and HTTP/2 requests (to measure the probes' cost per request)")
)

func main() {
	flag.Parse()
	h1 := &http.Client{Transport: &http.Transport{}}
	h2 := &http.Client{Transport: &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}}
	big := serveH1("127.0.0.61:0", bigHandler(1<<20))
	closing := serveH1("127.0.0.62:0", http.HandlerFunc(closingHandler))
	correct := serveH1("127.0.0.63:0", bigHandler(64<<10))
	reused := serveH1("127.0.0.64:0", bigHandler(1<<20))
	wrapped := serveH1("127.0.0.65:0", bigHandler(1<<20))
	churned := serveH1("127.0.0.68:0", bigHandler(1<<20))
	h2big := serveH2("127.0.0.66:0", bigHandler(16<<20))
	h2correct := serveH2("127.0.0.67:0", bigHandler(64<<10))

	fmt.Println("WAITING")
	bufio.NewReader(os.Stdin).ReadString('\n')
	results := []Result{
		h1Unread(h1, big),
		h1CloseWait(h1, closing),
		h1Correct(h1, correct),
		h1Reused(h1, reused),
		h1Wrapper(h1, wrapped),
		h1Churned(h1, churned),
		h2NeverRead(h2, h2big),
		h2Correct(h2, h2correct),
	}
	for _, r := range results {
		line, _ := json.Marshal(r)
		fmt.Println(string(line))
	}
	fmt.Println("DONE")
	for i := 0; i < *bench; i++ {
		drain(must(h1.Get(correct)))
		drain(must(h2.Get(h2correct)))
	}
	if *bench > 0 {
		fmt.Println("BENCH DONE")
	}
	select {}
}

func must(resp *http.Response, err error) *http.Response {
	if err != nil {
		log.Fatal(err)
	}
	return resp
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func h1Unread(c *http.Client, url string) Result {
	r := Result{Scenario: "h1_unread", Proto: "h1", Host: "127.0.0.61", Requests: *n, Leaks: *n}
	for i := 0; i < *n; i++ {
		_ = must(c.Get(url + mark(&r.Site)))
	}
	return r
}

func h1CloseWait(c *http.Client, url string) Result {
	r := Result{Scenario: "h1_closewait", Proto: "h1", Host: "127.0.0.62", Requests: *n, Leaks: *n}
	for i := 0; i < *n; i++ {
		_ = must(c.Get(url + mark(&r.Site)))
	}
	return r
}

func h1Correct(c *http.Client, url string) Result {
	r := Result{Scenario: "h1_correct", Proto: "h1", Host: "127.0.0.63", Requests: *n}
	for i := 0; i < *n; i++ {
		drain(must(c.Get(url + mark(&r.Site))))
	}
	return r
}

func h1Reused(c *http.Client, url string) Result {
	var first Site
	r := Result{Scenario: "h1_reused", Proto: "h1", Host: "127.0.0.64", Requests: 1, Leaks: 1, OtherRequests: *n, OtherSite: &first}
	for i := 0; i < *n; i++ {
		drain(must(c.Get(url + mark(&first))))
	}
	_ = must(c.Get(url + mark(&r.Site)))
	return r
}

// doRequest is the kind of helper every adaptor of a relay calls.
//
//go:noinline
func doRequest(c *http.Client, url string) *http.Response {
	return must(c.Get(url))
}

func h1Wrapper(c *http.Client, url string) Result {
	r := Result{Scenario: "h1_wrapper", Proto: "h1", Host: "127.0.0.65", Requests: *n, Leaks: *n}
	for i := 0; i < *n; i++ {
		_ = doRequest(c, url+mark(&r.Site))
	}
	return r
}

// h1Churned makes the HTTP/1.1 call-site probe's remembered fds go stale: the connection of a
// request read to EOF is closed and its persistConn collected (the next one may be allocated
// at its address), and a file holds the closed connection's fd number while the next request
// dials, so the new connection's fd differs from the one the probe remembered for that
// address. A probe that trusted what it remembered would give the leak the closed fd.
func h1Churned(c *http.Client, url string) Result {
	var first Site
	r := Result{Scenario: "h1_churned", Proto: "h1", Host: "127.0.0.68", Requests: *n, Leaks: *n, OtherRequests: *n, OtherSite: &first}
	for i := 0; i < *n; i++ {
		drain(must(c.Get(url + mark(&first))))
		c.CloseIdleConnections()
		// Its read and write loops end, then two collections free its persistConn.
		time.Sleep(20 * time.Millisecond)
		runtime.GC()
		runtime.GC()
		hold, err := os.Open(os.DevNull)
		if err != nil {
			log.Fatal(err)
		}
		_ = must(c.Get(url + mark(&r.Site)))
		hold.Close()
	}
	return r
}

func h2NeverRead(c *http.Client, url string) Result {
	r := Result{Scenario: "h2_never_read", Proto: "h2", Host: "127.0.0.66", Requests: *n, Leaks: *n}
	for i := 0; i < *n; i++ {
		resp := must(c.Get(url + mark(&r.Site)))
		if resp.ProtoMajor != 2 {
			log.Fatalf("h2_never_read: got %s", resp.Proto)
		}
	}
	return r
}

func h2Correct(c *http.Client, url string) Result {
	r := Result{Scenario: "h2_correct", Proto: "h2", Host: "127.0.0.67", Requests: *n}
	for i := 0; i < *n; i++ {
		drain(must(c.Get(url + mark(&r.Site))))
	}
	return r
}

func bigHandler(size int) http.HandlerFunc {
	chunk := make([]byte, 32<<10)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), size-sent)]); err != nil {
				return
			}
		}
	}
}

// closingHandler answers 429 with a small body and closes the connection after it.
func closingHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write([]byte(`{"error":"rate limited"}`))
}

func listen(addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func serveH1(addr string, h http.Handler) string {
	ln := listen(addr)
	go (&http.Server{Handler: h}).Serve(ln)
	return "http://" + ln.Addr().String()
}

func serveH2(addr string, h http.Handler) string {
	ln := listen(addr)
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{selfSigned()},
		NextProtos:   []string{"h2", "http/1.1"},
	}}
	go srv.ServeTLS(ln, "", "")
	return "https://" + ln.Addr().String()
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gosites.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
