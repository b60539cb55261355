package config

import "strconv"

// Workers is the `workers` setting: how many processes serve the proxy and
// API listeners. 1, the default, is one process. More starts that many
// worker processes, each a full Tollgate instance with its share of the
// Ps (procs / workers, at least one), behind one set of listening sockets
// the kernel spreads connections over (SO_REUSEPORT), as nginx runs its
// worker processes. WorkersAuto runs one worker per P.
//
// Why processes: one process with two Ps hands goroutines between its
// threads (wake-ups, work stealing, a futex per hand-off); two processes
// with one P each never do. On the 2-core bench host that measured 12-13 %
// more passthrough throughput, 11-12 % more in lease mode and 0-4 % more
// in exact mode, whose Redis batches halve (bench/README.md, "Workers"). Every worker keeps its own tenant cache, Redis and
// PostgreSQL connections and, in lease mode, its own lease, exactly as
// separate replicas do.
type Workers int

// WorkersAuto runs one worker per P (see Procs), at most maxWorkers.
const WorkersAuto Workers = 0

// maxWorkers bounds an explicit count; anything larger is a typo.
const maxWorkers = 256

const workersExpect = "auto or a whole number from 1 to 256"

func checkWorkers(s string) (string, string) {
	return checkWordOrCount(s, "auto", maxWorkers, workersExpect)
}

// workersValue turns a value checkWorkers accepted into a Workers.
func workersValue(s string) Workers {
	n, _ := strconv.Atoi(s) // "auto" gives 0, WorkersAuto
	return Workers(n)
}

// Split returns how many worker processes to run and the GOMAXPROCS each
// gets, given the Ps all of Tollgate may use (the procs setting resolved):
// the Ps are shared out evenly, and every worker gets at least one.
func (w Workers) Split(procs int) (workers, each int) {
	procs = max(procs, 1)
	workers = int(w)
	if w == WorkersAuto {
		workers = min(procs, maxWorkers)
	}
	workers = max(workers, 1)
	return workers, max(procs/workers, 1)
}

// String is the setting as written in the file.
func (w Workers) String() string {
	if w == WorkersAuto {
		return "auto"
	}
	return strconv.Itoa(int(w))
}
