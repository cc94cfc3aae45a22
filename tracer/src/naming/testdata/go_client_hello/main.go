// Command go_client_hello writes the first TLS flight of a Go crypto/tls client to a file:
// tls.Client over net.Pipe with ServerName set, no network, standard library only.
//
// It produced the capture beside it, which the naming tests parse:
//
//	cd tracer/src/naming/testdata/go_client_hello
//	go run main.go -server-name api.anthropic.com -o ../go1.19_client_hello_api.anthropic.com.bin
//
// The tests also run it afresh when `go` is on PATH (the random and key share differ each run).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	serverName := flag.String("server-name", "api.anthropic.com", "the ServerName the client sends")
	output := flag.String("o", "", "file to write the ClientHello records to")
	flag.Parse()
	if *output == "" {
		fmt.Fprintln(os.Stderr, "usage: go run main.go -server-name NAME -o FILE")
		os.Exit(2)
	}

	clientSide, serverSide := net.Pipe()
	go func() {
		client := tls.Client(clientSide, &tls.Config{ServerName: *serverName})
		// The handshake fails once the server side closes: only its first flight matters.
		_ = client.Handshake()
	}()

	// The first flight is the ClientHello, in one or more handshake records: read records
	// until the handshake message they carry is complete.
	var flight, handshake []byte
	for len(handshake) < 4 || len(handshake) < 4+(int(handshake[1])<<16|int(handshake[2])<<8|int(handshake[3])) {
		header := make([]byte, 5)
		if _, err := io.ReadFull(serverSide, header); err != nil {
			fail(err)
		}
		body := make([]byte, int(header[3])<<8|int(header[4]))
		if _, err := io.ReadFull(serverSide, body); err != nil {
			fail(err)
		}
		flight = append(append(flight, header...), body...)
		handshake = append(handshake, body...)
	}
	serverSide.Close()

	if err := os.WriteFile(*output, flight, 0o644); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "go_client_hello:", err)
	os.Exit(1)
}
