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
// to Redis over one long-lived connection, shared by every request of the
// process. Concurrent requests' commands leave together: whoever finds no
// write in progress writes everything queued so far with one syscall, and
// one reader goroutine hands each reply to its caller in order. Each
// request still costs exactly one command; what it no longer costs is a
// write, a read (and its EAGAIN), a pool checkout with its liveness probe
// and a wake-up of its own. On two shared cores that was about half of the
// proxy's and Redis's CPU for a metered request (bench/README.md).
//
// Every call is bounded by the timeout from when it was written, as with
// go-redis's socket timeouts: a Redis that stops answering fails every
// call in flight and the connection is dropped; the next call dials anew.
type pipeline struct {
	dial    func(ctx context.Context) (net.Conn, error)
	setup   [][]any // AUTH/SELECT, sent on each new connection
	timeout time.Duration
	slack   time.Duration

	mu   sync.Mutex
	link *pipeLink // nil when not connected
	// dialErr and dialAt: a dial that failed is not retried for
	// pipeRedialPause, so a dead Redis costs requests a failed dial each
	// only that often, not one per request.
	dialErr error
	dialAt  time.Time
	closed  bool

	sent atomic.Uint64 // commands written, for tests and the bench
}

// pipeRedialPause is how long after a failed dial calls fail at once.
const pipeRedialPause = 100 * time.Millisecond

// pipeLink is one connection and what is in flight on it.
type pipeLink struct {
	conn    net.Conn
	dead    bool
	wbuf    []byte // encoded commands not yet written
	spare   []byte
	writing bool      // a caller is writing; others only append
	writeDL time.Time // armed write deadline
	readDL  time.Time // armed read deadline
	queue   []*pipeCall
	head    int
}

// pipeCall is one command waiting for its reply.
type pipeCall struct {
	cmd    redis.Cmder
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
	if err := p.send(ctx, c); err != nil {
		c.cmd = nil
		pipeCallPool.Put(c)
		cmd.SetErr(err)
		return err
	}
	<-c.done
	c.cmd = nil
	pipeCallPool.Put(c)
	return cmd.Err()
}

// send queues c's command and writes the queue unless another caller is
// already writing it, in which case that caller's next write takes it.
func (p *pipeline) send(ctx context.Context, c *pipeCall) error {
	p.mu.Lock()
	l, err := p.linkLocked(ctx)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	n := len(l.wbuf)
	if l.wbuf, err = appendCommand(l.wbuf, c.cmd.Args()); err != nil {
		l.wbuf = l.wbuf[:n]
		p.mu.Unlock()
		return fmt.Errorf("redis pipeline: %w", err)
	}
	now := time.Now()
	c.sentAt = now
	idle := l.head == len(l.queue)
	l.queue = append(l.queue, c)
	p.sent.Add(1)
	if idle && l.readDL.Sub(now) < p.timeout-p.slack {
		// Nothing was owed, so the reader may be blocked under an old
		// deadline or none; this reply must come within the timeout.
		l.readDL = now.Add(p.timeout)
		_ = l.conn.SetReadDeadline(l.readDL)
	}
	if l.writing {
		p.mu.Unlock()
		return nil
	}
	l.writing = true
	// Let the requests that are ready to run on this thread reach this
	// point first, so they leave in this write instead of each making its
	// own: on two shared cores this was 8-20% more metered requests per
	// second for the cost of the few microseconds they take.
	p.mu.Unlock()
	runtime.Gosched()
	p.mu.Lock()
	now = time.Now()
	for len(l.wbuf) > 0 && !l.dead {
		buf := l.wbuf
		l.wbuf = l.spare[:0]
		if l.writeDL.IsZero() || l.writeDL.Sub(now) < p.timeout-p.slack {
			l.writeDL = now.Add(p.timeout)
			_ = l.conn.SetWriteDeadline(l.writeDL)
		}
		p.mu.Unlock()
		_, err := l.conn.Write(buf)
		p.mu.Lock()
		l.spare = buf[:0]
		if err != nil {
			p.failLocked(l, fmt.Errorf("redis pipeline write: %w", err))
		}
		now = time.Now()
	}
	l.writing = false
	p.mu.Unlock()
	// c is answered (maybe with an error) by the reader or by failLocked.
	return nil
}

// linkLocked returns the connection, dialling it when there is none.
func (p *pipeline) linkLocked(ctx context.Context) (*pipeLink, error) {
	if p.link != nil {
		return p.link, nil
	}
	if p.closed {
		return nil, errPipeClosed
	}
	if p.dialErr != nil && time.Since(p.dialAt) < pipeRedialPause {
		return nil, p.dialErr
	}
	conn, err := p.connect(ctx)
	if err != nil {
		p.dialErr, p.dialAt = fmt.Errorf("redis pipeline dial: %w", err), time.Now()
		return nil, p.dialErr
	}
	p.dialErr = nil
	l := &pipeLink{conn: conn}
	p.link = l
	go p.read(l)
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

// Close drops the connection, failing what is in flight, and refuses
// further calls.
func (p *pipeline) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.link != nil {
		p.failLocked(p.link, errPipeClosed)
	}
}

// failLocked drops l and answers everything in flight on it with err.
func (p *pipeline) failLocked(l *pipeLink, err error) {
	if l.dead {
		return
	}
	l.dead = true
	_ = l.conn.Close()
	if p.link == l {
		p.link = nil
	}
	for _, c := range l.queue[l.head:] {
		c.cmd.SetErr(err)
		c.done <- struct{}{}
	}
	l.queue, l.head, l.wbuf = nil, 0, nil
}

// read hands replies to their callers in the order the commands were
// written, until the connection fails.
func (p *pipeline) read(l *pipeLink) {
	var (
		r       pipeReader
		replies []pipeReply
		calls   []*pipeCall
		err     error
	)
	for {
		replies, err = r.next(l.conn, replies[:0])
		if len(replies) > 0 {
			calls = p.deliver(l, replies, calls[:0])
			clear(replies)
			clear(calls)
		}
		if err == nil {
			continue
		}
		p.mu.Lock()
		if l.dead {
			p.mu.Unlock()
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if l.head == len(l.queue) {
				// Idle: nothing was owed, so nothing was late.
				l.readDL = time.Time{}
				_ = l.conn.SetReadDeadline(time.Time{})
				p.mu.Unlock()
				continue
			}
			if due := l.queue[l.head].sentAt.Add(p.timeout); time.Now().Before(due) {
				// The deadline was armed for a call answered since.
				l.readDL = due
				_ = l.conn.SetReadDeadline(due)
				p.mu.Unlock()
				continue
			}
			err = fmt.Errorf("redis pipeline: no reply within %v: %w", p.timeout, err)
		} else {
			err = fmt.Errorf("redis pipeline read: %w", err)
		}
		p.failLocked(l, err)
		p.mu.Unlock()
		return
	}
}

// deliver answers the oldest calls in flight with replies, in order.
func (p *pipeline) deliver(l *pipeLink, replies []pipeReply, calls []*pipeCall) []*pipeCall {
	p.mu.Lock()
	if l.dead {
		p.mu.Unlock()
		return calls
	}
	if len(replies) > len(l.queue)-l.head {
		// Replies nobody asked for: the stream is out of step.
		p.failLocked(l, errors.New("redis pipeline: unexpected reply"))
		p.mu.Unlock()
		return calls
	}
	calls = append(calls, l.queue[l.head:l.head+len(replies)]...)
	clear(l.queue[l.head : l.head+len(replies)])
	l.head += len(replies)
	if l.head == len(l.queue) {
		l.queue, l.head = l.queue[:0], 0
	} else if due := l.queue[l.head].sentAt.Add(p.timeout); due.Sub(l.readDL) > p.slack {
		// The next reply owed is younger: its own bound, not the one
		// of the calls just answered.
		l.readDL = due
		_ = l.conn.SetReadDeadline(due)
	}
	p.mu.Unlock()
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
