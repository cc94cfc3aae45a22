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
// line with the same pc).
//
// It also prints the layout of the standard library's structs its responses lead to, as Go's
// own reflect computes it (not from DWARF), for the offsets table test:
//
//	layout <struct type> <field> <offset> <field type>
//
// Standard library only: the matrix builds with GOPROXY=off.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"runtime"
	"strings"
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
	// Before reading: the h2 stream's pipe still holds its buffer, and the HTTP/1.1 read loop
	// is parked until the body is read, so nothing walked here changes under reflect.
	walkValue(reflect.ValueOf(resp.Body), 0)
	walkValue(reflect.ValueOf(resp.Request), 0)
	walkValue(reflect.ValueOf(r.client.Transport), 0)
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

// printed: the struct types whose layout was printed; typeWalked and valueWalked: the struct
// types whose fields were followed by type and by value (a value walk finds dynamic types a
// type walk of the same struct cannot).
var printed, typeWalked, valueWalked = map[reflect.Type]bool{}, map[reflect.Type]bool{}, map[reflect.Type]bool{}

// layoutPackages: the packages whose structs the tracer's probes read.
var layoutPackages = []string{"net/http", "net", "crypto/tls", "internal/poll", "net/url"}

// printLayout prints t's fields once, if t is a named struct of one of layoutPackages.
func printLayout(t reflect.Type) {
	if printed[t] {
		return
	}
	printed[t] = true
	wanted := false
	for _, p := range layoutPackages {
		if t.PkgPath() == p || strings.HasPrefix(t.PkgPath(), "net/http/") {
			wanted = true
		}
	}
	if wanted && t.Name() != "" {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			fmt.Printf("layout %s %s %d %s\n", t.String(), f.Name, f.Offset, f.Type.String())
		}
	}
}

// walkType follows a type's pointers, elements and fields (not interfaces: their dynamic
// types are only known from values).
func walkType(t reflect.Type, depth int) {
	if depth > 40 {
		return
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
		walkType(t.Elem(), depth+1)
	case reflect.Map:
		walkType(t.Key(), depth+1)
		walkType(t.Elem(), depth+1)
	case reflect.Struct:
		printLayout(t)
		if !typeWalked[t] {
			typeWalked[t] = true
			for i := 0; i < t.NumField(); i++ {
				walkType(t.Field(i).Type, depth+1)
			}
		}
	}
}

// walkValue follows a value's non-nil pointers and interfaces to their dynamic types (how the
// h2 pipe's *dataBuffer and a connection's *tls.Conn and *net.TCPConn are found), and
// everything else by type. Reading unexported fields through reflect is allowed; nothing is
// written.
func walkValue(v reflect.Value, depth int) {
	if !v.IsValid() || depth > 40 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			walkType(v.Type(), depth+1)
			return
		}
		walkValue(v.Elem(), depth+1)
	case reflect.Struct:
		t := v.Type()
		printLayout(t)
		if valueWalked[t] {
			return
		}
		valueWalked[t] = true
		for i := 0; i < t.NumField(); i++ {
			walkValue(v.Field(i), depth+1)
		}
	default:
		walkType(v.Type(), depth+1)
	}
}
