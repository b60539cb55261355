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
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// pipeline carries the hot path's script calls (reserve, release, commit)
// to Redis over a few long-lived connections (lanes), shared by every
// request of the process. Concurrent requests' commands leave together: a
// request pushes its call onto its lane's lock-free stack, and whoever
// finds no write in progress takes the whole stack and writes it with one
// syscall; one reader goroutine per lane hands each reply to its caller in
// order. Each request still costs exactly one command; what it no longer
// costs is a write, a read (and its EAGAIN), a pool checkout with its
// liveness probe and a wake-up of its own. On two shared cores that was
// about half of the proxy's and Redis's CPU for a metered request
// (bench/README.md). A request takes no lock unless it is the one writing
// a batch: the lane's mutex is shared by that writer, the reader and a
// dial, never by every request.
//
// Every call is bounded by the timeout from when it was written, as with
// go-redis's socket timeouts: a Redis that stops answering fails every
// call in flight and the connection is dropped; the next call dials anew.
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

	sent atomic.Uint64 // commands written, for tests and the bench
}

// pipeMaxLanes bounds the connections of one pipeline.
const pipeMaxLanes = 8

// pipeLane is one connection of a pipeline.
type pipeLane struct {
	p *pipeline
	// Calls not yet written, newest first, and whether a caller is
	// writing them: requests only push and, at most one at a time, write.
	stack   atomic.Pointer[pipeCall]
	writing atomic.Bool

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
	buf     []byte    // the writer's encoding buffer
	writeDL time.Time // armed write deadline
	readDL  time.Time // armed read deadline
	queue   []*pipeCall
	head    int
}

// pipeCall is one command waiting for its reply.
type pipeCall struct {
	cmd    redis.Cmder
	next   *pipeCall // in the lane's stack, then in the batch being written
	sentAt time.Time
	done   chan struct{}
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
	if err := ctx.Err(); err != nil {
		cmd.SetErr(err)
		return err
	}
	c := pipeCallPool.Get().(*pipeCall)
	c.cmd = cmd
	ln := p.lanes[0]
	if len(p.lanes) > 1 {
		ln = p.lanes[p.next.Add(1)%uint32(len(p.lanes))]
	}
	ln.send(ctx, c)
	<-c.done
	c.cmd, c.next = nil, nil
	pipeCallPool.Put(c)
	return cmd.Err()
}

// send pushes c and, unless another caller is writing (whose next batch
// then takes c), writes everything pushed. c is answered, with a reply or
// an error, by the reader or by the writer's failure handling.
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
	for {
		top := ln.stack.Swap(nil)
		if top == nil {
			ln.writing.Store(false)
			// A call pushed between the Swap and the Store saw a writer
			// and left itself to it.
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
		ln.write(ctx, batch)
	}
}

// write sends batch, oldest first, in one write.
func (ln *pipeLane) write(ctx context.Context, batch *pipeCall) {
	ln.mu.Lock()
	l, err := ln.linkLocked(ctx)
	if err != nil {
		ln.mu.Unlock()
		for c := batch; c != nil; {
			next := c.next
			c.cmd.SetErr(err)
			c.done <- struct{}{}
			c = next
		}
		return
	}
	now := time.Now()
	idle := l.head == len(l.queue)
	buf, n := l.buf[:0], 0
	for c := batch; c != nil; {
		// Read next first: once c is queued and the lock released, its
		// caller may be answered and reuse it.
		next := c.next
		var aerr error
		mark := len(buf)
		if buf, aerr = appendCommand(buf, c.cmd.Args()); aerr != nil {
			buf = buf[:mark]
			c.cmd.SetErr(fmt.Errorf("redis pipeline: %w", aerr))
			c.done <- struct{}{}
		} else {
			c.sentAt = now
			l.queue = append(l.queue, c)
			n++
		}
		c = next
	}
	l.buf = buf
	ln.p.sent.Add(uint64(n))
	if n == 0 {
		ln.mu.Unlock()
		return
	}
	if idle && l.readDL.Sub(now) < ln.p.timeout-ln.p.slack {
		// Nothing was owed, so the reader may be blocked under an old
		// deadline or none; these replies must come within the timeout.
		l.readDL = now.Add(ln.p.timeout)
		_ = l.conn.SetReadDeadline(l.readDL)
	}
	if l.writeDL.Sub(now) < ln.p.timeout-ln.p.slack {
		l.writeDL = now.Add(ln.p.timeout)
		_ = l.conn.SetWriteDeadline(l.writeDL)
	}
	ln.mu.Unlock()
	// Only the writer touches l.buf, and there is one writer at a time.
	if _, err := l.conn.Write(buf); err != nil {
		ln.mu.Lock()
		ln.failLocked(l, fmt.Errorf("redis pipeline write: %w", err))
		ln.mu.Unlock()
	}
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

// Close drops the connections, failing what is in flight, and refuses
// further calls.
func (p *pipeline) Close() {
	for _, ln := range p.lanes {
		ln.mu.Lock()
		ln.closed = true
		if ln.link != nil {
			ln.failLocked(ln.link, errPipeClosed)
		}
		ln.mu.Unlock()
	}
}

// failLocked drops l and answers everything in flight on it with err.
func (ln *pipeLane) failLocked(l *pipeLink, err error) {
	if l.dead {
		return
	}
	l.dead = true
	_ = l.conn.Close()
	if ln.link == l {
		ln.link = nil
	}
	for _, c := range l.queue[l.head:] {
		c.cmd.SetErr(err)
		c.done <- struct{}{}
	}
	l.queue, l.head = nil, 0
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
			if due := l.queue[l.head].sentAt.Add(ln.p.timeout); time.Now().Before(due) {
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
		ln.failLocked(l, err)
		ln.mu.Unlock()
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
		ln.failLocked(l, errors.New("redis pipeline: unexpected reply"))
		ln.mu.Unlock()
		return calls
	}
	calls = append(calls, l.queue[l.head:l.head+len(replies)]...)
	clear(l.queue[l.head : l.head+len(replies)])
	l.head += len(replies)
	if l.head == len(l.queue) {
		l.queue, l.head = l.queue[:0], 0
	} else if due := l.queue[l.head].sentAt.Add(ln.p.timeout); due.Sub(l.readDL) > ln.p.slack {
		// The next reply owed is younger: its own bound, not the one
		// of the calls just answered.
		l.readDL = due
		_ = l.conn.SetReadDeadline(due)
	}
	ln.mu.Unlock()
	for i, c := range calls {
		setReply(c.cmd, replies[i])
		c.done <- struct{}{}
	}
	return calls
}

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
		var num [24]byte
		var s []byte
		switch v := a.(type) {
		case string:
			b = appendBulkString(b, v)
			continue
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
		b = appendBulk(b, s)
	}
	return b, nil
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
