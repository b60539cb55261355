package quota

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/rawconn"
)

// pipeline carries the hot path's script calls (reserve, release, commit)
// to Redis over a few long-lived connections (lanes), shared by every
// request of the process. Concurrent requests' commands leave together: a
// request pushes its call onto its lane's lock-free stack, and whoever
// finds the lane idle takes the whole stack and writes it with one
// syscall; one reader goroutine per lane hands each reply to its caller in
// order and writes the calls that gathered meanwhile (see send). What a
// request no longer costs is a write, a read (and its EAGAIN), a pool
// checkout with its liveness probe and a wake-up of its own. On two shared cores that was
// about half of the proxy's and Redis's CPU for a metered request
// (bench/README.md). A request takes no lock unless it is the one writing
// a batch: the lane's mutex is shared by that writer, the reader and a
// dial, never by every request.
//
// Calls of a script with a batch form (the reserve) that leave in one write
// go as one call of that form: one command, one script run and one reply
// for all of them, each decided in order as its own call would have been
// (reserve_batch.lua); calls with identical arguments are sent once, with
// their count. Each request still waits for exactly one round
// trip; Redis runs one script instead of one per request, which is most of
// its CPU for a metered request.
//
// Every call is bounded by the timeout from when it was made (its wait for
// the batch in flight included), as with go-redis's socket timeouts: a
// Redis that stops answering fails every call in flight and the
// connection is dropped; the next call dials anew.
type pipeline struct {
	dial    func(ctx context.Context) (net.Conn, error)
	setup   [][]any // AUTH/SELECT, sent on each new connection
	timeout time.Duration
	slack   time.Duration

	// lanes are independent connections; a call takes the next one round
	// robin. One lane per two Ps (up to pipeMaxLanes): on two cores one
	// connection's larger batches measured 5-10% more metered requests per
	// second than two.
	lanes []*pipeLane
	next  atomic.Uint32

	sent  atomic.Uint64 // commands written, for tests and the bench
	calls atomic.Uint64 // calls answered by those commands
}

// pipeBatch is a script that runs many calls of another at once; see
// intScript.batched.
type pipeBatch struct {
	hash, src string
}

// pipeMaxGroup bounds the calls folded into one batch script run, so one
// run holds Redis for a bounded time (a reserve costs it about a
// microsecond in a batch).
const pipeMaxGroup = 64

// pipeMaxLanes bounds the connections of one pipeline.
const pipeMaxLanes = 8

// pipeLane is one connection of a pipeline.
type pipeLane struct {
	p *pipeline
	// Calls not yet written, newest first, and whether a caller is
	// writing them: requests only push and, at most one at a time, write.
	stack   atomic.Pointer[pipeCall]
	writing atomic.Bool
	// batchEval: the server answered a batch NOSCRIPT (it restarted or
	// its scripts were flushed), so the next batch goes as EVAL, which
	// loads it again.
	batchEval atomic.Bool

	mu   sync.Mutex // the link's state: writer, reader and dial
	link *pipeLink  // nil when not connected
	// dialErr and dialAt: a dial that failed is not retried for
	// pipeRedialPause, so a dead Redis costs requests a failed dial each
	// only that often, not one per request.
	dialErr error
	dialAt  time.Time
	closed  bool
}

// pipeRedialPause is how long after a failed dial calls fail at once.
const pipeRedialPause = 100 * time.Millisecond

// pipeLink is one connection and what is in flight on it.
type pipeLink struct {
	conn    net.Conn
	dead    bool
	buf     []byte // the writer's encoding buffer
	inWrite bool   // a writer is in conn.Write with buf
	// busy: calls written on this link hold the lane's busy flag; whoever
	// ends that (last reply, failure, or the writer when either came
	// during its write) clears it and drains the lane.
	busy    bool
	writeDL time.Time // armed write deadline
	readDL  time.Time // armed read deadline
	queue   []*pipeCall
	head    int
	runs    []pipeRun // the writer's scratch for grouping
}

// pipeRun is calls with identical arguments in a group.
type pipeRun struct {
	head, tail *pipeCall
	n          int
}

// pipeRunSearch is how many of the latest runs a call is compared with:
// the calls of a batch mostly come from a few tenants and routes.
const pipeRunSearch = 4

// pipeCall is one command waiting for its reply, or (members set) a batch
// script run answering several.
type pipeCall struct {
	cmd   redis.Cmder
	batch *pipeBatch // the script that may run this call with others
	next  *pipeCall  // in the lane's stack, in the write, in a group
	// madeAt is when the call was made: its timeout runs from then, so
	// waiting for the lane's batch in flight counts against it too.
	madeAt time.Time
	done   chan struct{}

	members *pipeCall // a group's calls, linked by next, each run together
	runLen  int       // in a group: the length of the run c leads, 0 in a run
}

var pipeCallPool = sync.Pool{New: func() any { return &pipeCall{done: make(chan struct{}, 1)} }}

// newPipeline returns a pipeline to the server of rdb's options, or nil when
// rdb is not a single-server client (a cluster routes by key; its calls
// keep going through go-redis).
func newPipeline(rdb redis.UniversalClient) *pipeline {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	o := c.Options()
	timeout := o.ReadTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	dialTimeout := o.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = 5 * time.Second
	}
	p := &pipeline{timeout: timeout, slack: timeout / 8}
	for range min(max(runtime.GOMAXPROCS(0)/2, 1), pipeMaxLanes) {
		p.lanes = append(p.lanes, &pipeLane{p: p})
	}
	dialer := o.Dialer
	network, addr := o.Network, o.Addr
	if network == "" {
		network = "tcp"
	}
	p.dial = func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		if dialer != nil {
			return dialer(ctx, network, addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	if o.Password != "" {
		if o.Username != "" {
			p.setup = append(p.setup, []any{"auth", o.Username, o.Password})
		} else {
			p.setup = append(p.setup, []any{"auth", o.Password})
		}
	}
	if o.DB != 0 {
		p.setup = append(p.setup, []any{"select", o.DB})
	}
	return p
}

// Process sends cmd and waits for its reply, which must be an integer, an
// array of integers or an error (the quota scripts reply nothing else).
func (p *pipeline) Process(ctx context.Context, cmd redis.Cmder) error {
	return p.process(ctx, cmd, nil)
}

// process is Process for a call that batch, when not nil, may run together
// with others: cmd is then EVALSHA of a script whose batch form batch is.
func (p *pipeline) process(ctx context.Context, cmd redis.Cmder, batch *pipeBatch) error {
	if err := ctx.Err(); err != nil {
		cmd.SetErr(err)
		return err
	}
	c := pipeCallPool.Get().(*pipeCall)
	c.cmd, c.batch, c.madeAt = cmd, batch, time.Now()
	ln := p.lanes[0]
	if len(p.lanes) > 1 {
		ln = p.lanes[p.next.Add(1)%uint32(len(p.lanes))]
	}
	ln.send(ctx, c)
	<-c.done
	c.cmd, c.next, c.batch = nil, nil, nil
	pipeCallPool.Put(c)
	return cmd.Err()
}

// send pushes c and, unless the lane is busy (whose next batch then takes
// c), writes everything pushed. c is answered, with a reply or an error,
// by the reader or by the writer's failure handling.
//
// The lane is busy while a caller writes and then until every reply to
// that write has arrived: one batch in flight at a time. Calls that come
// meanwhile wait for the replies, and the reader writes them all as the
// next batch. An idle lane writes at once, so a lone request waits no
// longer than before; under load a request waits at most for one reply
// more, and the batches grow with the load, which is what makes a call
// cheap for Redis and for the proxy (bench/README.md).
func (ln *pipeLane) send(ctx context.Context, c *pipeCall) {
	for {
		top := ln.stack.Load()
		c.next = top
		if ln.stack.CompareAndSwap(top, c) {
			break
		}
	}
	if !ln.writing.CompareAndSwap(false, true) {
		return
	}
	// Let the requests that are ready to run on this thread push theirs
	// first, so they leave in this write instead of each making its own:
	// on two shared cores this was 8-20% more metered requests per second
	// for the few microseconds they take.
	runtime.Gosched()
	ln.drain(ctx)
}

// drain is run by whoever holds the lane's busy flag (ln.writing): it
// writes what is pushed and leaves the flag held by the batch in flight,
// or clears it when nothing is left to write.
func (ln *pipeLane) drain(ctx context.Context) {
	for {
		top := ln.stack.Swap(nil)
		if top == nil {
			ln.writing.Store(false)
			// A call pushed between the Swap and the Store saw the lane
			// busy and left itself to it.
			if ln.stack.Load() == nil || !ln.writing.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		var batch *pipeCall // oldest first
		for top != nil {
			next := top.next
			top.next = batch
			batch, top = top, next
		}
		if ln.write(ctx, batch) {
			// Whoever takes the last reply (or the failure) carries on.
			return
		}
	}
}

// write sends batch, oldest first, in one write, and reports whether calls
// are in flight: then whoever answers the last of them (deliver or
// failLocked) drains the lane next; otherwise the caller still does.
func (ln *pipeLane) write(ctx context.Context, batch *pipeCall) bool {
	ln.mu.Lock()
	l, err := ln.linkLocked(ctx)
	if err != nil {
		ln.mu.Unlock()
		err = notSentError{err}
		for c := batch; c != nil; {
			next := c.next
			c.cmd.SetErr(err)
			c.done <- struct{}{}
			c = next
		}
		return false
	}
	now := time.Now()
	idle := l.head == len(l.queue)
	// This write's calls are queued from here on. The queue is only
	// compacted once every call in it is answered, and these cannot be
	// before they are written, so the index holds through the write.
	from := len(l.queue)
	buf, n := l.buf[:0], 0
	// Calls that a batch script may run, oldest first, held back from the
	// write until all are seen. Only one script has a batch form today;
	// a second one's calls simply go one by one.
	var group, groupTail *pipeCall
	var groupBatch *pipeBatch
	groupLen := 0
	for c := batch; c != nil; {
		// Read next first: once c is queued and the lock released, its
		// caller may be answered and reuse it.
		next := c.next
		if c.batch != nil && (groupBatch == nil || c.batch == groupBatch) {
			groupBatch = c.batch
			c.next = nil
			if group == nil {
				group = c
			} else {
				groupTail.next = c
			}
			groupTail = c
			groupLen++
			if groupLen == pipeMaxGroup {
				buf, n = ln.writeGroup(l, buf, n, group, groupLen)
				group, groupLen = nil, 0
			}
			c = next
			continue
		}
		buf, n = l.writeOne(buf, n, c)
		c = next
	}
	if group != nil {
		buf, n = ln.writeGroup(l, buf, n, group, groupLen)
	}
	l.buf = buf
	ln.p.sent.Add(uint64(n))
	if n == 0 {
		ln.mu.Unlock()
		return false
	}
	if idle {
		// Nothing was owed, so the reader may be blocked under an old
		// deadline or none; these replies must come within the timeout
		// of the oldest call, which may have waited for the lane.
		oldest := now
		for _, c := range l.queue[l.head:] {
			if c.madeAt.Before(oldest) {
				oldest = c.madeAt
			}
		}
		if due := oldest.Add(ln.p.timeout); due.Sub(l.readDL).Abs() > ln.p.slack {
			l.readDL = due
			_ = l.conn.SetReadDeadline(due)
		}
	}
	if l.writeDL.Sub(now) < ln.p.timeout-ln.p.slack {
		l.writeDL = now.Add(ln.p.timeout)
		_ = l.conn.SetWriteDeadline(l.writeDL)
	}
	l.busy, l.inWrite = true, true
	ln.mu.Unlock()
	// Only the writer touches l.buf, and there is one writer at a time:
	// the lane stays with this writer until its write has returned.
	nw, err := l.conn.Write(buf)
	ln.mu.Lock()
	defer ln.mu.Unlock()
	l.inWrite = false
	if err != nil {
		unsent := len(l.queue)
		if nw == 0 {
			unsent = from
		}
		ln.failFromLocked(l, fmt.Errorf("redis pipeline write: %w", err), unsent)
	}
	// Every reply may have come, or the link failed, during the write:
	// deliver and failLocked then left the lane to this writer.
	if l.busy && (l.dead || l.head == len(l.queue)) {
		l.busy = false
	}
	return l.busy
}

// writeOne encodes c into buf and queues it; n counts commands queued.
func (l *pipeLink) writeOne(buf []byte, n int, c *pipeCall) ([]byte, int) {
	mark := len(buf)
	buf, err := appendCommand(buf, c.cmd.Args())
	if err != nil {
		c.cmd.SetErr(fmt.Errorf("redis pipeline: %w", err))
		c.done <- struct{}{}
		return buf[:mark], n
	}
	l.queue = append(l.queue, c)
	return buf, n + 1
}

// writeGroup encodes the size calls linked from members as one call of
// their batch script and queues it; one call alone goes as itself.
func (ln *pipeLane) writeGroup(l *pipeLink, buf []byte, n int, members *pipeCall, size int) ([]byte, int) {
	if size == 1 {
		return l.writeOne(buf, n, members)
	}
	b := members.batch
	verb, script := "evalsha", b.hash
	if ln.batchEval.Swap(false) {
		verb, script = "eval", b.src
	}
	members = l.runsOf(members)
	mark := len(buf)
	buf, err := appendBatchCommand(buf, verb, script, members)
	if err != nil {
		// A call the batch cannot carry; one by one, each gets its own
		// answer (an encoding error is the call's own).
		buf = buf[:mark]
		for c := members; c != nil; {
			next := c.next
			buf, n = l.writeOne(buf, n, c)
			c = next
		}
		return buf, n
	}
	g := pipeCallPool.Get().(*pipeCall)
	g.members, g.madeAt = members, members.madeAt
	for c := members.next; c != nil; c = c.next {
		if c.madeAt.Before(g.madeAt) {
			g.madeAt = c.madeAt
		}
	}
	l.queue = append(l.queue, g)
	return buf, n + 1
}

// runsOf relinks members so that calls with identical arguments follow one
// another, the first of each run holding its length.
func (l *pipeLink) runsOf(members *pipeCall) *pipeCall {
	runs := l.runs[:0]
	for c := members; c != nil; {
		next := c.next
		c.next, c.runLen = nil, 0
		args := c.cmd.Args()
		found := false
		for i := len(runs) - 1; i >= 0 && i >= len(runs)-pipeRunSearch; i-- {
			if r := &runs[i]; sameArgs(r.head.cmd.Args(), args) {
				r.tail.next, r.tail = c, c
				r.n++
				found = true
				break
			}
		}
		if !found {
			runs = append(runs, pipeRun{head: c, tail: c, n: 1})
		}
		c = next
	}
	var head, tail *pipeCall
	for i := range runs {
		r := &runs[i]
		r.head.runLen = r.n
		if head == nil {
			head = r.head
		} else {
			tail.next = r.head
		}
		tail = r.tail
	}
	clear(runs)
	l.runs = runs[:0]
	return head
}

// sameArgs reports a and b equal argument by argument; only the types the
// quota scripts send compare, anything else counts as different.
func sameArgs(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		switch x := a[i].(type) {
		case string:
			if y, ok := b[i].(string); !ok || x != y {
				return false
			}
		case int:
			if y, ok := b[i].(int); !ok || x != y {
				return false
			}
		case int64:
			if y, ok := b[i].(int64); !ok || x != y {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// appendBatchCommand appends one call of a batch script running the
// EVALSHA calls linked from members, sent once per run: every run's keys,
// then per run its key count, argument count, length and arguments.
func appendBatchCommand(buf []byte, verb, script string, members *pipeCall) ([]byte, error) {
	keys, argv := 0, 0
	for c := members; c != nil; c = c.next {
		args := c.cmd.Args()
		nk, ok := scriptKeyCount(args)
		if !ok {
			return buf, errNotScriptCall
		}
		if c.runLen > 0 {
			keys += nk
			argv += 3 + len(args) - argKeys - nk
		}
	}
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(3+keys+argv), 10)
	buf = append(buf, '\r', '\n')
	buf = appendBulkString(buf, verb)
	buf = appendBulkString(buf, script)
	buf = appendArgInt(buf, int64(keys))
	var err error
	for c := members; c != nil; c = c.next {
		if c.runLen == 0 {
			continue
		}
		args := c.cmd.Args()
		nk, _ := scriptKeyCount(args)
		for _, a := range args[argKeys : argKeys+nk] {
			if buf, err = appendArg(buf, a); err != nil {
				return buf, err
			}
		}
	}
	for c := members; c != nil; c = c.next {
		if c.runLen == 0 {
			continue
		}
		args := c.cmd.Args()
		nk, _ := scriptKeyCount(args)
		buf = appendArgInt(buf, int64(nk))
		buf = appendArgInt(buf, int64(len(args)-argKeys-nk))
		buf = appendArgInt(buf, int64(c.runLen))
		for _, a := range args[argKeys+nk:] {
			if buf, err = appendArg(buf, a); err != nil {
				return buf, err
			}
		}
	}
	return buf, nil
}

var errNotScriptCall = errors.New("not a script call")

// scriptKeyCount reads an EVALSHA call's key count and checks the call
// holds that many keys.
func scriptKeyCount(args []any) (int, bool) {
	if len(args) < argKeys || args[argCmd] != evalshaArg {
		return 0, false
	}
	var nk int
	switch v := args[argNumKeys].(type) {
	case int:
		nk = v
	case int64:
		nk = int(v)
	default:
		return 0, false
	}
	if nk < 0 || argKeys+nk > len(args) {
		return 0, false
	}
	return nk, true
}

// linkLocked returns the connection, dialling it when there is none.
func (ln *pipeLane) linkLocked(ctx context.Context) (*pipeLink, error) {
	if ln.link != nil {
		return ln.link, nil
	}
	if ln.closed {
		return nil, errPipeClosed
	}
	if ln.dialErr != nil && time.Since(ln.dialAt) < pipeRedialPause {
		return nil, ln.dialErr
	}
	conn, err := ln.p.connect(ctx)
	if err != nil {
		ln.dialErr, ln.dialAt = fmt.Errorf("redis pipeline dial: %w", err), time.Now()
		return nil, ln.dialErr
	}
	ln.dialErr = nil
	l := &pipeLink{conn: conn}
	ln.link = l
	go ln.read(l)
	return l, nil
}

// connect dials and runs the setup commands synchronously.
func (p *pipeline) connect(ctx context.Context) (net.Conn, error) {
	conn, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	conn = rawconn.Wrap(conn)
	if len(p.setup) == 0 {
		return conn, nil
	}
	var buf []byte
	for _, args := range p.setup {
		if buf, err = appendCommand(buf, args); err != nil {
			conn.Close()
			return nil, err
		}
	}
	_ = conn.SetDeadline(time.Now().Add(p.timeout))
	if _, err = conn.Write(buf); err != nil {
		conn.Close()
		return nil, err
	}
	var r pipeReader
	var replies []pipeReply
	for len(replies) < len(p.setup) && err == nil {
		replies, err = r.next(conn, replies)
	}
	if err == nil && (len(replies) != len(p.setup) || r.buffered() > 0) {
		err = errors.New("unexpected reply to the connection's setup")
	}
	for _, v := range replies {
		if err == nil && v.kind == respError {
			err = redisError(v.str)
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

var errPipeClosed = errors.New("redis pipeline: closed")

// errNotSent is in the chain of a call's error when the pipeline failed it
// before writing any of it: Redis never saw the call, so sending it again
// cannot apply it twice. Any other failure after the write (a timeout, a
// dropped connection) leaves open whether Redis ran it.
var errNotSent = errors.New("not sent")

type notSentError struct{ err error }

func (e notSentError) Error() string   { return e.err.Error() }
func (e notSentError) Unwrap() []error { return []error{e.err, errNotSent} }

// Close drops the connections, failing what is in flight, and refuses
// further calls.
func (p *pipeline) Close() {
	for _, ln := range p.lanes {
		ln.mu.Lock()
		ln.closed = true
		answered := ln.link != nil && ln.failLocked(ln.link, errPipeClosed)
		ln.mu.Unlock()
		if answered {
			// Calls waiting for the lane get errPipeClosed too.
			ln.drain(context.Background())
		}
	}
}

// failLocked drops l and answers everything in flight on it with err. It
// reports whether the caller now holds the lane's busy flag and must drain
// the lane once it has released ln.mu (not so while a writer is still in
// its write: the writer carries on).
func (ln *pipeLane) failLocked(l *pipeLink, err error) bool {
	return ln.failFromLocked(l, err, len(l.queue))
}

// failFromLocked is failLocked where the calls from queue index unsent on
// were never written (their write failed before its first byte): they get
// err as a notSentError, so their callers know Redis never ran them.
func (ln *pipeLane) failFromLocked(l *pipeLink, err error, unsent int) bool {
	if l.dead {
		return false
	}
	l.dead = true
	_ = l.conn.Close()
	if ln.link == l {
		ln.link = nil
	}
	for i := l.head; i < len(l.queue); i++ {
		if i >= unsent {
			answerErr(l.queue[i], notSentError{err})
		} else {
			answerErr(l.queue[i], err)
		}
	}
	l.queue, l.head = nil, 0
	if l.busy && !l.inWrite {
		l.busy = false
		return true
	}
	return false
}

// answerErr answers c, or every member of the group c, with err.
func answerErr(c *pipeCall, err error) {
	if c.members == nil {
		c.cmd.SetErr(err)
		c.done <- struct{}{}
		return
	}
	for m := c.members; m != nil; {
		next := m.next
		m.cmd.SetErr(err)
		m.done <- struct{}{}
		m = next
	}
	c.members = nil
	pipeCallPool.Put(c)
}

// read hands replies to their callers in the order the commands were
// written, until the connection fails.
func (ln *pipeLane) read(l *pipeLink) {
	var (
		r       pipeReader
		replies []pipeReply
		calls   []*pipeCall
		err     error
	)
	for {
		replies, err = r.next(l.conn, replies[:0])
		if len(replies) > 0 {
			calls = ln.deliver(l, replies, calls[:0])
			clear(replies)
			clear(calls)
		}
		if err == nil {
			continue
		}
		ln.mu.Lock()
		if l.dead {
			ln.mu.Unlock()
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if l.head == len(l.queue) {
				// Idle: nothing was owed, so nothing was late.
				l.readDL = time.Time{}
				_ = l.conn.SetReadDeadline(time.Time{})
				ln.mu.Unlock()
				continue
			}
			if due := l.queue[l.head].madeAt.Add(ln.p.timeout); time.Now().Before(due) {
				// The deadline was armed for a call answered since.
				l.readDL = due
				_ = l.conn.SetReadDeadline(due)
				ln.mu.Unlock()
				continue
			}
			err = fmt.Errorf("redis pipeline: no reply within %v: %w", ln.p.timeout, err)
		} else {
			err = fmt.Errorf("redis pipeline read: %w", err)
		}
		answered := ln.failLocked(l, err)
		ln.mu.Unlock()
		if answered {
			ln.drain(context.Background())
		}
		return
	}
}

// deliver answers the oldest calls in flight with replies, in order.
func (ln *pipeLane) deliver(l *pipeLink, replies []pipeReply, calls []*pipeCall) []*pipeCall {
	ln.mu.Lock()
	if l.dead {
		ln.mu.Unlock()
		return calls
	}
	if len(replies) > len(l.queue)-l.head {
		// Replies nobody asked for: the stream is out of step.
		answered := ln.failLocked(l, errors.New("redis pipeline: unexpected reply"))
		ln.mu.Unlock()
		if answered {
			ln.drain(context.Background())
		}
		return calls
	}
	calls = append(calls, l.queue[l.head:l.head+len(replies)]...)
	clear(l.queue[l.head : l.head+len(replies)])
	l.head += len(replies)
	last := l.head == len(l.queue)
	if last {
		l.queue, l.head = l.queue[:0], 0
		// A writer still in its write drains the lane itself.
		last = l.busy && !l.inWrite
		if last {
			l.busy = false
		}
	} else if due := l.queue[l.head].madeAt.Add(ln.p.timeout); due.Sub(l.readDL) > ln.p.slack {
		// The next reply owed is younger: its own bound, not the one
		// of the calls just answered.
		l.readDL = due
		_ = l.conn.SetReadDeadline(due)
	}
	ln.mu.Unlock()
	for i, c := range calls {
		if c.members != nil {
			ln.answerGroup(c, replies[i])
			continue
		}
		ln.p.calls.Add(1)
		setReply(c.cmd, replies[i])
		c.done <- struct{}{}
	}
	if last {
		// The lane's batch is answered: the calls that waited for it
		// leave now. The callers are woken first because the write is
		// slow to return: it wakes Redis, which the kernel often runs
		// on this core before the writer, so on two shared cores the
		// write took about 110 µs of wall time, and callers woken
		// after it waited that much longer (docs/design.md).
		ln.drain(context.Background())
	}
	return calls
}

// answerGroup splits a batch script's reply among its members.
func (ln *pipeLane) answerGroup(g *pipeCall, v pipeReply) {
	switch v.kind {
	case respError:
		if strings.HasPrefix(v.str, "NOSCRIPT") {
			// Each member retries alone with EVAL; the next batch
			// loads the batch script.
			ln.batchEval.Store(true)
		}
		answerErr(g, redisError(v.str))
		return
	case respInts:
	default:
		answerErr(g, fmt.Errorf("redis pipeline: want an array of integers from a batch, got %s", v.kind))
		return
	}
	// One slice per batch, not per call; a lane's old and new readers may
	// both be here, so no scratch is shared.
	replies, err := splitBatchReply(v.ints, g.members, make([][]int64, 0, pipeMaxGroup))
	if err != nil {
		answerErr(g, err)
		return
	}
	i := 0
	for m := g.members; m != nil; i++ {
		next := m.next
		setReply(m.cmd, pipeReply{kind: respInts, ints: replies[i]})
		m.done <- struct{}{}
		m = next
	}
	ln.p.calls.Add(uint64(i))
	g.members = nil
	pipeCallPool.Put(g)
}

// splitBatchReply cuts a batch script's reply into one reply per member,
// appended to dst, following the runs of members (see reserve_batch.lua
// for the layout). A reply out of step with the runs is an error and
// answers nobody. The replies share ints, except those of a run's
// counted requests, which get a copy with their own current value.
func splitBatchReply(ints []int64, members *pipeCall, dst [][]int64) ([][]int64, error) {
	i := 0
	next := func() ([]int64, bool) {
		if i >= len(ints) || ints[i] < 0 || int64(len(ints)-i-1) < ints[i] {
			return nil, false
		}
		n := int(ints[i])
		r := ints[i+1 : i+1+n : i+1+n]
		i += 1 + n
		return r, true
	}
	for c := members; c != nil; {
		if c.runLen < 1 {
			return dst, errBatchReply
		}
		first, ok := next()
		if !ok {
			return dst, errBatchReply
		}
		dst = append(dst, first)
		k := c.runLen - 1 // the run's other calls, which follow c
		c = c.next
		if k == 0 {
			continue
		}
		if len(ints)-i < 2 {
			return dst, errBatchReply
		}
		m, step := ints[i], ints[i+1]
		i += 2
		if m < 0 || m > int64(k) || (step != 0 && len(first) < 2) {
			return dst, errBatchReply
		}
		var counted []int64
		if step != 0 && m > 0 {
			counted = make([]int64, int(m)*len(first))
		}
		for j := 1; j <= int(m); j++ {
			if step == 0 {
				dst = append(dst, first)
				continue
			}
			r := counted[(j-1)*len(first) : j*len(first) : j*len(first)]
			copy(r, first)
			r[1] += int64(j) * step
			dst = append(dst, r)
		}
		if m < int64(k) {
			refused, ok := next()
			if !ok {
				return dst, errBatchReply
			}
			for range k - int(m) {
				dst = append(dst, refused)
			}
		}
		for range k {
			if c == nil || c.runLen != 0 {
				return dst, errBatchReply
			}
			c = c.next
		}
	}
	if i != len(ints) {
		return dst, errBatchReply
	}
	return dst, nil
}

var errBatchReply = errors.New("redis pipeline: batch reply does not match its calls")

// setReply stores v in cmd, which is an IntCmd or IntSliceCmd.
func setReply(cmd redis.Cmder, v pipeReply) {
	if v.kind == respError {
		cmd.SetErr(redisError(v.str))
		return
	}
	switch c := cmd.(type) {
	case *redis.IntCmd:
		if v.kind != respInt {
			c.SetErr(fmt.Errorf("redis pipeline: want an integer reply, got %s", v.kind))
			return
		}
		c.SetVal(v.n)
	case *redis.IntSliceCmd:
		if v.kind != respInts {
			c.SetErr(fmt.Errorf("redis pipeline: want an array of integers, got %s", v.kind))
			return
		}
		c.SetVal(v.ints)
	default:
		cmd.SetErr(fmt.Errorf("redis pipeline: %T is not supported", cmd))
	}
}

// redisError is an error reply; like go-redis's own, it satisfies
// redis.Error, so redis.HasErrorPrefix (NOSCRIPT) sees it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

// appendCommand appends args as a RESP array of bulk strings.
func appendCommand(b []byte, args []any) ([]byte, error) {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		var err error
		if b, err = appendArg(b, a); err != nil {
			return b, err
		}
	}
	return b, nil
}

// appendArgInt appends n as a bulk string.
func appendArgInt(b []byte, n int64) []byte {
	var num [24]byte
	return appendBulk(b, strconv.AppendInt(num[:0], n, 10))
}

// appendArg appends a as a bulk string, as go-redis would write it.
func appendArg(b []byte, a any) ([]byte, error) {
	var num [24]byte
	var s []byte
	switch v := a.(type) {
	case string:
		return appendBulkString(b, v), nil
	case []byte:
		s = v
	case int:
		s = strconv.AppendInt(num[:0], int64(v), 10)
	case int64:
		s = strconv.AppendInt(num[:0], v, 10)
	case int32:
		s = strconv.AppendInt(num[:0], int64(v), 10)
	case uint64:
		s = strconv.AppendUint(num[:0], v, 10)
	case uint32:
		s = strconv.AppendUint(num[:0], uint64(v), 10)
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return b, fmt.Errorf("argument %v is not a finite number", v)
		}
		s = strconv.AppendFloat(num[:0], v, 'f', -1, 64)
	case bool:
		if v {
			s = append(num[:0], '1')
		} else {
			s = append(num[:0], '0')
		}
	default:
		return b, fmt.Errorf("argument of type %T", a)
	}
	return appendBulk(b, s), nil
}

func appendBulkString(b []byte, s string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

func appendBulk(b, s []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}
