// gobench is the relay of `cargo xtask bench`'s Go-layer scenarios (go-h2, go-h1): an LLM
// relay in miniature, built by a Go the tracer's Go layer accepts (the newest toolchain of
// the matrix), so the bench measures the Go layer's probes on the hot path they sit on.
// Standard library only; loopback only.
//
//	gobench upstream -addr 127.0.0.71:18320
//	gobench relay -listen 127.0.0.1:18313 -upstream 127.0.0.71:18320 -proto h2|h1
//
// "upstream" plays the provider: TLS (a self-signed certificate made at start), HTTP/2 or
// HTTP/1.1 as the client asks (ALPN), keep-alive; every POST's body is read to EOF and
// answered with responseSize bytes of chat-completion JSON.
//
// "relay" plays one-api: every request it serves (a POST with a few KiB of JSON, from wrk)
// is read whole and forwarded as a POST over one shared http.Client with keep-alive, TLS to
// the upstream; the response is read to EOF, closed, and copied back. With -proto h2 the
// client negotiates HTTP/2 (ForceAttemptHTTP2, as ezlinkai's transports do); with -proto h1
// it is held to HTTP/1.1 (an empty TLSNextProto), still over TLS.
//
// Both print READY on stdout once they listen, and run until SIGTERM/SIGINT.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// responseSize is the upstream's answer: a few KiB of JSON, like a chat completion.
const responseSize = 4 << 10

// maxBody bounds what either side reads of a request body.
const maxBody = 1 << 20

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = runUpstream(os.Args[2:])
	case "relay":
		err = runRelay(os.Args[2:])
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gobench: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  gobench upstream [-addr 127.0.0.71:18320]
  gobench relay [-listen 127.0.0.1:18313] [-upstream 127.0.0.71:18320] [-proto h2|h1]`)
}

// completion returns about n bytes of chat-completion JSON.
func completion(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"chatcmpl-gobench","object":"chat.completion","model":"gobench-1",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"`)
	for b.Len() < n-64 {
		b.WriteString("lorem ipsum ")
	}
	b.WriteString(`"},"finish_reason":"stop"}],"usage":{"total_tokens":1024}}` + "\n")
	return b.Bytes()
}

func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.71:18320", "address to serve TLS (h2 and http/1.1) on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, err := selfSigned()
	if err != nil {
		return fmt.Errorf("making the certificate: %w", err)
	}
	body := completion(responseSize)
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Minute,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2", "http/1.1"},
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxBody)); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}),
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *addr, err)
	}
	return serveUntilSignal(srv, func() error { return srv.ServeTLS(l, "", "") })
}

func runRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:18313", "address to serve plain HTTP on (wrk's side)")
	upstream := fs.String("upstream", "127.0.0.71:18320", "the provider's TLS address")
	proto := fs.String("proto", "h2", "protocol to the provider: h2 or h1 (HTTP/1.1), both over TLS")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true, ServerName: "api.openai.com"},
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     5 * time.Minute,
	}
	switch *proto {
	case "h2":
		tr.ForceAttemptHTTP2 = true
	case "h1":
		// A non-nil, empty TLSNextProto keeps the transport to HTTP/1.1.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	default:
		return fmt.Errorf("-proto %q: want h2 or h1", *proto)
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	target := "https://" + *upstream + "/v1/chat/completions"
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			payload, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, target, bytes.NewReader(payload))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer sk-gobench")
			resp, err := client.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(body)
		}),
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	return serveUntilSignal(srv, func() error { return srv.Serve(l) })
}

// serveUntilSignal says READY, serves, and shuts down on SIGTERM or SIGINT.
func serveUntilSignal(srv *http.Server, serve func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	fmt.Println("READY")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// selfSigned makes a P-256 certificate for the provider's name, valid for a day. The relay
// does not verify it (loopback only).
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gobench"},
		DNSNames:     []string{"api.openai.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
