package tenant

import (
	"sync"
	"sync/atomic"
	"time"
)

// clockTick is the coarse clock's resolution; cache entries may outlive
// their TTL by up to this much.
const clockTick = 100 * time.Millisecond

// coarseClock keeps the wall time in an atomic so the request path reads an
// int64 instead of calling time.Now.
type coarseClock struct {
	now  atomic.Int64
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newCoarseClock() *coarseClock {
	c := &coarseClock{stop: make(chan struct{}), done: make(chan struct{})}
	c.now.Store(time.Now().UnixNano())
	go c.run()
	return c
}

func (c *coarseClock) run() {
	defer close(c.done)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.now.Store(now.UnixNano())
		}
	}
}

func (c *coarseClock) Now() int64 { return c.now.Load() }

func (c *coarseClock) Close() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}
