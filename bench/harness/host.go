package harness

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"
)

// The host's price of the two things a proxy on loopback does most: enter
// the kernel, and wake a thread that sleeps on a socket. Every request costs
// a handful of each (system calls to read and write, a wake-up of the peer
// each write makes readable, of Redis for a metered one), so between hosts
// they move every figure of a run, and they explain what code changes
// cannot: on a host where a system call costs a microsecond, a proxy is
// kernel-bound whatever its own code does (bench/README.md). The harness
// measures both at the start and the end of a run, so a run says which
// host it ran on and whether the host changed under it.

// HostCost is one measurement of the host's costs, in nanoseconds.
type HostCost struct {
	// SyscallNs is the time of the cheapest system call (getpid): the
	// kernel's entry and exit, which every read and write pays on top of
	// its work.
	SyscallNs float64 `json:"syscall_ns"`
	// WakeupRTTNs is the round trip of one byte between two threads over
	// a Unix socket pair, each blocked in read until the other writes: two
	// wake-ups of a sleeping thread and four system calls.
	WakeupRTTNs float64 `json:"wakeup_rtt_ns"`
}

// hostBatches is how many batches each figure is the median of: the host
// slows down in bursts, and the median of a few batches ignores one.
const hostBatches = 5

// measureHost measures the host's costs with hostBatches batches of
// syscalls system calls and of rtts round trips each.
func measureHost(syscalls, rtts int) (HostCost, error) {
	if syscalls < 1 || rtts < 1 {
		return HostCost{}, errors.New("host cost: batches need at least one call")
	}
	var h HostCost
	per := make([]float64, hostBatches)
	for i := range per {
		start := time.Now()
		for range syscalls {
			syscall.Getpid()
		}
		per[i] = float64(time.Since(start).Nanoseconds()) / float64(syscalls)
	}
	h.SyscallNs = spreadOf(per).Median
	var err error
	if h.WakeupRTTNs, err = wakeupRTT(rtts); err != nil {
		return HostCost{}, err
	}
	return h, nil
}

// wakeupRTT is the median over hostBatches batches of rtts round trips of
// one byte between this thread and an echo thread, both blocked in read on
// a socket pair the runtime's poller does not watch, so each side's read
// really sleeps and each write really wakes the other.
func wakeupRTT(rtts int) (rtt float64, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return 0, fmt.Errorf("host cost: socketpair: %w", err)
	}
	// A peer that stops answering makes a read fail after this instead
	// of blocking the run.
	tv := syscall.NsecToTimeval((5 * time.Second).Nanoseconds())
	for _, fd := range fds {
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
			syscall.Close(fds[0])
			syscall.Close(fds[1])
			return 0, fmt.Errorf("host cost: receive timeout: %w", err)
		}
	}

	total := rtts * hostBatches
	var echoErr error
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		echoErr = echo(fds[1], total)
	}()
	defer func() {
		// Shutting the pair down ends an echo still waiting (its read
		// returns at once), and the descriptors are closed only after it
		// returned, so it never touches a number the process reused.
		_ = syscall.Shutdown(fds[0], syscall.SHUT_RDWR)
		<-echoed
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		if err == nil && echoErr != nil {
			rtt, err = 0, echoErr
		}
	}()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	per := make([]float64, hostBatches)
	b := []byte{0}
	for i := range per {
		start := time.Now()
		for range rtts {
			if err := pingPong(fds[0], b); err != nil {
				return 0, err
			}
		}
		per[i] = float64(time.Since(start).Nanoseconds()) / float64(rtts)
	}
	return spreadOf(per).Median, nil
}

func pingPong(fd int, b []byte) error {
	if err := moveByte(syscall.Write, fd, b); err != nil {
		return fmt.Errorf("host cost: write: %w", err)
	}
	if err := moveByte(syscall.Read, fd, b); err != nil {
		return fmt.Errorf("host cost: read: %w", err)
	}
	return nil
}

func echo(fd, n int) error {
	b := []byte{0}
	for range n {
		if err := moveByte(syscall.Read, fd, b); err != nil {
			return fmt.Errorf("host cost: echo read: %w", err)
		}
		if err := moveByte(syscall.Write, fd, b); err != nil {
			return fmt.Errorf("host cost: echo write: %w", err)
		}
	}
	return nil
}

// moveByte reads or writes b's one byte. A signal interrupts a read on a
// socket with a receive timeout even under SA_RESTART (signal(7)), and a Go
// process gets signals all the time (the runtime's preemption, a child's
// exit), so an interrupted call is made again; the receive timeout still
// bounds a wait for a peer that stopped.
func moveByte(op func(int, []byte) (int, error), fd int, b []byte) error {
	for {
		n, err := op(fd, b)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return err
		case n != 1:
			return fmt.Errorf("%d bytes moved, want 1", n)
		}
		return nil
	}
}

// formatHostCost renders a measurement for the report: "a system call
// 1.19 µs, a wake-up round trip 38 µs".
func formatHostCost(h *HostCost) string {
	return fmt.Sprintf("a system call %s, a wake-up round trip %s", formatMicros(h.SyscallNs), formatMicros(h.WakeupRTTNs))
}

// formatMicros renders nanoseconds as microseconds with three significant
// digits at most.
func formatMicros(ns float64) string {
	us := ns / 1000
	switch {
	case us >= 100:
		return fmt.Sprintf("%.0f µs", us)
	case us >= 10:
		return fmt.Sprintf("%.1f µs", us)
	default:
		return fmt.Sprintf("%.2f µs", us)
	}
}
