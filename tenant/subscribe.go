package tenant

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// subscribeTimeout bounds the first connection attempt so NewResolver does
// not hang on an unreachable Redis; go-redis keeps retrying in the
// background.
const subscribeTimeout = 2 * time.Second

func (r *Resolver) subscribe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
	defer cancel()
	// The error is deliberately ignored: go-redis remembers the channel and
	// subscribes when it (re)connects, which listen observes.
	r.pubsub = r.rdb.Subscribe(ctx, invalidateChannel)
}

// listen applies invalidations until the subscription is closed. go-redis
// pings the connection, reconnects after failures and resubscribes; each
// (re)subscription arrives here as a *redis.Subscription and drops the whole
// cache, because invalidations published while disconnected are lost.
func (r *Resolver) listen(ctx context.Context) {
	defer close(r.done)
	defer r.live.Store(false)
	ch := r.pubsub.ChannelWithSubscriptions()
	stop := ctx.Done()
	subscriptions := 0
	for {
		select {
		case <-stop:
			// Without a subscription the cache could go stale; stop using it
			// before letting go of the connection.
			stop = nil
			r.live.Store(false)
			_ = r.pubsub.Close()
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				r.resetCaches()
				subscriptions++
				if subscriptions > 1 {
					r.log.Info("tenant invalidation subscription re-established; cache dropped")
				}
				r.readyOnce.Do(func() { close(r.ready) })
			case *redis.Message:
				r.apply(m.Payload)
			}
		}
	}
}

// apply handles one invalidation message: "key:<sha256hex>" or
// "tenant:<tid>".
func (r *Resolver) apply(payload string) {
	switch {
	case strings.HasPrefix(payload, msgKeyPrefix):
		h := payload[len(msgKeyPrefix):]
		if r.keys != nil && validHashHex(h) {
			r.keys.evictKey(h)
		}
	case strings.HasPrefix(payload, msgTenantPrefix):
		tid := payload[len(msgTenantPrefix):]
		if !validTenantID(tid) {
			return
		}
		for _, c := range []*cache{r.keys, r.tenants, r.tokens} {
			if c != nil {
				c.evictTenant(tid)
			}
		}
	default:
		r.log.Warn("tenant: ignoring unknown invalidation message", zap.String("payload", payload))
	}
}

func (r *Resolver) resetCaches() {
	for _, c := range []*cache{r.keys, r.tenants, r.tokens} {
		if c != nil {
			c.reset()
		}
	}
}
