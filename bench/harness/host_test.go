package harness

import (
	"math"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The figures are timings, so only their shape is checked: both measured,
// positive and finite. Their size is the host's, reported, never judged.
func TestMeasureHost(t *testing.T) {
	h, err := measureHost(200, 20)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]float64{"system call": h.SyscallNs, "wake-up round trip": h.WakeupRTTNs} {
		if !(v > 0) || math.IsInf(v, 0) {
			t.Errorf("%s: %v ns", name, v)
		}
	}
	if _, err := measureHost(0, 20); err == nil {
		t.Error("an empty batch was accepted")
	}
}

func TestFormatHostCost(t *testing.T) {
	for _, tc := range []struct {
		h    HostCost
		want string
	}{
		{HostCost{SyscallNs: 1185, WakeupRTTNs: 38240}, "a system call 1.19 µs, a wake-up round trip 38.2 µs"},
		{HostCost{SyscallNs: 62.4, WakeupRTTNs: 151000}, "a system call 0.06 µs, a wake-up round trip 151 µs"},
	} {
		if got := formatHostCost(&tc.h); got != tc.want {
			t.Errorf("formatHostCost(%+v) = %q, want %q", tc.h, got, tc.want)
		}
	}
	r := &Report{Machine: Machine{NProc: 2, StealPct: -1, HostStart: &HostCost{SyscallNs: 1185, WakeupRTTNs: 38240},
		HostEnd: &HostCost{SyscallNs: 1300, WakeupRTTNs: 41000}}}
	md := r.Markdown()
	if !strings.Contains(md, "on this host a system call 1.19 µs, a wake-up round trip 38.2 µs at the start, a system call 1.30 µs, a wake-up round trip 41.0 µs at the end") {
		t.Errorf("machine line: %s", strings.SplitN(md, "\n", 4)[2])
	}
}

// Signals interrupt a read on a socket with a receive timeout, even under
// SA_RESTART (signal(7)), and a Go process gets them all the time: the
// runtime's preemption, a child's exit. The measurement must carry on.
func TestMeasureHostUnderSignals(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_ = syscall.Kill(os.Getpid(), syscall.SIGURG)
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	_, err := measureHost(2000, 500)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
}
