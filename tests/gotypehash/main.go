// gotypehash prints the runtime type hash (abi.Type.Hash, copied into every itab) of
// *crypto/tls.Conn and *net.TCPConn for the Go that builds it: the TYPE_HASHES table of
// tracer/src/collect/goattach.rs. Run it with each toolchain of the matrix:
//
//	for v in target/go-matrix/*/; do (cd tests/gotypehash && ../../$v/bin/go run .); done

package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"unsafe"
)

type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

type iface struct {
	tab  unsafe.Pointer
	data unsafe.Pointer
}

func hashOf(v any) uint32 {
	e := (*eface)(unsafe.Pointer(&v))
	// abi.Type: Size_ uintptr, PtrBytes uintptr, Hash uint32
	return *(*uint32)(unsafe.Add(e.typ, 16))
}

func itabHash(c net.Conn) uint32 {
	i := (*iface)(unsafe.Pointer(&c))
	return *(*uint32)(unsafe.Add(i.tab, 16))
}

func main() {
	var t *tls.Conn = &tls.Conn{}
	var tc *net.TCPConn = &net.TCPConn{}
	fmt.Printf("%s tls %#x itab %#x tcp %#x itab %#x\n", runtime.Version(), hashOf(t), itabHash(t), hashOf(tc), itabHash(tc))
}
