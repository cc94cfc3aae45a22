// goh2 is a stand-alone HTTP/2 client for trying tracer's Go layer (issue 12) by hand: it
// serves TLS h2 on 127.0.0.x in-process, makes requests in the scenarios, and prints,
// every second, its own count of open client streams (goroutines parked in the client
// stream's writeRequest, from a dump of all goroutines) as ground truth. It stays alive until
// killed. Standard library only; build it stripped with any Go of the matrix:
//
//	target/go-matrix/1.27.3/bin/go build -C tests/goh2 -ldflags "-s -w" -o /tmp/goh2-1.27 .
//
// Scenarios (-scenario, a comma-separated list run in order, -n requests each):
//
//	never_read    16 MiB body never read nor closed: one leaked stream per request
//	partial       64 KiB read of an endless body, then dropped: one leaked stream per request
//	err429        429 with a small body, neither read nor closed: 0 (END_STREAM ends it)
//	close_unread  16 MiB body closed without reading: 0 (RST_STREAM)
//	correct       read to EOF and closed: 0
//	listening     an endless body read as it trickles in: open, not leaked, a read waiting
//	multiplex     like never_read, all n at once on the one connection
package main

import (
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
	"strings"
	"sync"
	"syscall"
	"time"
)

const bigBody = 16 << 20

func main() {
	addr := flag.String("addr", "127.0.0.31:0", "where the in-process TLS h2 server listens")
	scenarios := flag.String("scenario", "never_read", "comma-separated scenarios, run in order")
	n := flag.Int("n", 3, "requests per scenario")
	wait := flag.Duration("wait", 0, "pause before the first request (to attach a tracer)")
	gap := flag.Duration("gap", 500*time.Millisecond, "pause between scenarios")
	flag.Parse()

	url := serve(*addr)
	client := &http.Client{Transport: &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}}
	go report()
	time.Sleep(*wait)
	expected := 0
	for _, s := range strings.Split(*scenarios, ",") {
		cpu, wall := cpuNs(), time.Now()
		expected += run(client, url, s, *n)
		log.Printf("scenario %s done in %v, %d ns of CPU (client and server) per request; expect %d leaked streams in all",
			s, time.Since(wall).Round(time.Millisecond), (cpuNs()-cpu)/int64(*n), expected)
		time.Sleep(*gap)
	}
	fmt.Printf("{\"pid\":%d,\"scenarios_done\":true,\"expected_leaked\":%d}\n", os.Getpid(), expected)
	select {}
}

// run makes n requests of one scenario and returns how many streams it leaves open for good.
func run(client *http.Client, url, scenario string, n int) int {
	get := func(path string) *http.Response {
		resp, err := client.Get(url + path)
		if err != nil {
			log.Fatalf("%s: %v", scenario, err)
		}
		if resp.ProtoMajor != 2 {
			log.Fatalf("%s: got %s, want HTTP/2", scenario, resp.Proto)
		}
		return resp
	}
	switch scenario {
	case "never_read":
		for i := 0; i < n; i++ {
			_ = get("/big")
		}
		return n
	case "partial":
		for i := 0; i < n; i++ {
			resp := get("/endless")
			if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
				log.Fatalf("partial: %v", err)
			}
		}
		return n
	case "err429":
		for i := 0; i < n; i++ {
			_ = get("/429")
		}
		return 0
	case "close_unread":
		for i := 0; i < n; i++ {
			get("/big").Body.Close()
		}
		return 0
	case "correct":
		for i := 0; i < n; i++ {
			resp := get("/big")
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return 0
	case "listening":
		for i := 0; i < n; i++ {
			resp := get("/trickle")
			go io.Copy(io.Discard, resp.Body)
		}
		return 0
	case "multiplex":
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); _ = get("/big") }()
		}
		wg.Wait()
		return n
	}
	log.Fatalf("unknown scenario %q", scenario)
	return 0
}

// cpuNs is the CPU time this process used so far (user and system).
func cpuNs() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// report prints the open client streams every second: goroutines parked in writeRequest.
func report() {
	buf := make([]byte, 16<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		open := 0
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "clientStream).writeRequest(") {
				open++
			}
		}
		line, _ := json.Marshal(map[string]int{"pid": os.Getpid(), "open_streams": open})
		fmt.Println(string(line))
		time.Sleep(time.Second)
	}
}

// serve starts a TLS server offering h2 and returns its base URL.
func serve(addr string) string {
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
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/trickle", func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := w.Write([]byte("data: tick\n\n")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(3 * time.Second)
		}
	})
	mux.HandleFunc("/429", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":"rate limited"}`))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{
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
		Subject:      pkix.Name{CommonName: "goh2.test"},
		DNSNames:     []string{"goh2.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.31")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
