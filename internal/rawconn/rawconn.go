// Package rawconn makes TCP connections whose reads and writes are raw
// system calls made from inside the runtime's poller.
package rawconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a TCP connection whose reads and writes are made with raw system
// calls from inside the runtime's poller (syscall.RawConn), instead of
// through net's blocking-syscall path.
//
// Why: a read or write on a non-blocking socket never blocks, but Go's
// ordinary path still marks the goroutine's P as "in a syscall". A loopback
// write wakes the peer, and the kernel often runs that peer first, so the
// write can outlast a scheduler-monitor tick: the monitor then takes the P
// away, hands it to another thread (a futex wake and a context switch), and
// keeps itself waking every 20 µs. Under proxy load that was about a tenth
// of the proxy's CPU (bench/README.md). A raw call keeps the P; waiting
// still goes through the poller, so deadlines and Close behave as on any
// net.Conn.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The buffer and result of the call in progress, read by the callbacks
	// bound below (a closure per call would allocate); the mutexes keep
	// concurrent Reads (or Writes) from sharing them, as net.Conn allows.
	rmu             sync.Mutex
	rbuf            []byte
	rn              int
	rerr            syscall.Errno
	wmu             sync.Mutex
	wbuf            []byte
	wn              int
	werr            syscall.Errno
	onRead, onWrite func(uintptr) bool
}

// maxIO bounds the bytes one raw call moves. A raw call cannot be preempted
// (a garbage collection's stop-the-world waits for it) and keeps its P, so
// its time in the kernel is bounded: copying 256 KiB takes tens of
// microseconds, while a socket buffer autotuned to megabytes could take a
// millisecond. Buffers larger than this are moved in several calls.
const maxIO = 256 << 10

// Wrap returns c as a Conn when it is a TCP connection with a file
// descriptor, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &Conn{TCPConn: tc, rc: rc}
	r.onRead, r.onWrite = r.readFD, r.writeFD
	return r
}

func (r *Conn) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(min(len(r.rbuf), maxIO)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.rn, r.rerr = int(n), e
		return true
	}
}

func (r *Conn) writeFD(fd uintptr) bool {
	for len(r.wbuf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[0])), uintptr(min(len(r.wbuf), maxIO)))
		switch e {
		case 0:
			r.wn += int(n)
			r.wbuf = r.wbuf[n:]
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.werr = e
		return true
	}
	return true
}

func (r *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rmu.Lock()
	r.rbuf, r.rn, r.rerr = p, 0, 0
	err := r.rc.Read(r.onRead)
	n, errno := r.rn, r.rerr
	r.rbuf = nil
	r.rmu.Unlock()
	switch {
	case err != nil:
		return 0, r.opError("read", err)
	case errno != 0:
		return 0, r.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *Conn) Write(p []byte) (int, error) {
	r.wmu.Lock()
	r.wbuf, r.wn, r.werr = p, 0, 0
	var err error
	if len(p) > 0 {
		err = r.rc.Write(r.onWrite)
	}
	n, errno := r.wn, r.werr
	r.wbuf = nil
	r.wmu.Unlock()
	switch {
	case err != nil:
		return n, r.opError("write", err)
	case errno != 0:
		return n, r.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError reports err as net reports a failed Read or Write; an error of
// the poller comes wrapped as a "raw-read" or "raw-write" one.
func (r *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
}

// listener hands out accepted TCP connections as Conns.
type listener struct {
	net.Listener
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Listen listens on addr (TCP); the connections it accepts are Conns.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return listener{ln}, nil
}

// WrapListener makes the TCP connections ln accepts Conns: for a listener
// made elsewhere (one inherited from a parent process).
func WrapListener(ln net.Listener) net.Listener {
	return listener{ln}
}
