// Command gostub is the Go program that tracer's Go-layer tests read: `cargo xtask go-matrix`
// builds it with every toolchain of the matrix, in every form a relay ships in (stripped,
// -trimpath, PIE, static with external linking), and runs it once to record its ground truth.
//
// It makes one HTTP/1.1 and one HTTP/2 request to an in-process TLS server on loopback, so the
// linker keeps both client round-trip paths and the HTTP/2 stream functions the uprobes need.
// Then it prints, from Go's own runtime (runtime.Caller and runtime.CallersFrames, which read
// the same .gopclntab but with Go's code, not tracer's), a few PCs with their function, file and
// line:
//
//	truth <pc-anchor> <function> <file> <line>
//	stack <pc-anchor> <function> <file> <line>
//
// pc is a return address (as in a stack), anchor is main.main's entry, so pc-anchor (signed,
// decimal) does not depend on where a PIE was loaded. A `truth` line is one call site
// (runtime.Caller: the innermost function, inlined or not); `stack` lines are the frames of one
// runtime.Callers stack, innermost first, one line per logical frame (an inlined call adds a
// line with the same pc). Standard library only: the matrix builds with GOPROXY=off.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
)

// anchor is main.main's entry (set first thing in main), which the reader finds by name.
var anchor uintptr

func truth(skip int) {
	pc, file, line, ok := runtime.Caller(skip + 1)
	if !ok {
		fmt.Fprintln(os.Stderr, "gostub: runtime.Caller failed")
		os.Exit(1)
	}
	fn := runtime.FuncForPC(pc)
	fmt.Printf("truth %d %s %s %d\n", int64(pc)-int64(anchor), fn.Name(), file, line)
}

func stack() {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(2, pcs)
	for _, pc := range pcs[:n] {
		frames := runtime.CallersFrames([]uintptr{pc})
		for {
			frame, more := frames.Next()
			fmt.Printf("stack %d %s %s %d\n", int64(pc)-int64(anchor), frame.Function, frame.File, frame.Line)
			if !more {
				break
			}
		}
	}
}

// leaf and middle are not inlined: they are functions of .gopclntab's function table. inlined
// is inlined into middle (and main.main.func1 into main), so those only exist in the inline
// tree of the function they were inlined into.

//go:noinline
func leaf() {
	truth(0)
	stack()
}

func inlined() {
	leaf()
}

//go:noinline
func middle() {
	inlined()
	truth(0)
}

type roundTripper struct{ client *http.Client }

//go:noinline
func (r *roundTripper) get(url string) (string, error) {
	truth(0)
	resp, err := r.client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	return resp.Proto, nil
}

func main() {
	pc, _, _, _ := runtime.Caller(0)
	anchor = runtime.FuncForPC(pc).Entry()
	truth(0)
	middle()
	func() { truth(0) }()

	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello\n")
	})

	h1 := httptest.NewTLSServer(handler)
	defer h1.Close()
	h2 := httptest.NewUnstartedServer(handler)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()

	for _, c := range []struct {
		server *httptest.Server
		want   string
	}{{h1, "HTTP/1.1"}, {h2, "HTTP/2.0"}} {
		rt := &roundTripper{client: c.server.Client()}
		proto, err := rt.get(c.server.URL)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gostub: %s request: %v\n", c.want, err)
			os.Exit(1)
		}
		if proto != c.want {
			fmt.Fprintf(os.Stderr, "gostub: asked for %s, got %s\n", c.want, proto)
			os.Exit(1)
		}
		fmt.Printf("proto %s\n", proto)
	}
	fmt.Printf("version %s\n", runtime.Version())
}
