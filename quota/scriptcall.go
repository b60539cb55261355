package quota

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// intScript runs a Lua script whose reply is integers only, with fewer
// allocations than redis.Script.Run: the caller hands over the complete
// argument list (EVALSHA, hash and key count included, from a pooled
// buffer with pre-boxed values) instead of go-redis copying and boxing it
// into a new one, and the reply is read as []int64 (IntSliceCmd) or int64
// (IntCmd) instead of an []any with every element boxed.
type intScript struct {
	hash any // SHA1 of the source, boxed
	src  any // the source, boxed, for EVAL when the server lacks the script
	// batch, when set, is the script that runs many of this script's
	// calls at once; the pipeline folds concurrent EVALSHAs into it.
	batch *pipeBatch
}

func newIntScript(s *redis.Script, src string) *intScript {
	return &intScript{hash: s.Hash(), src: src}
}

// batched sets the script whose run decides many of is's calls in order:
// its KEYS are every call's keys, its ARGV per call the key count, the
// argument count and the arguments, and its reply per call the length of
// the call's reply, then the reply (reserve_batch.lua).
func (is *intScript) batched(src string) *intScript {
	is.batch = &pipeBatch{hash: redis.NewScript(src).Hash(), src: src}
	return is
}

// processor is the part of redis.UniversalClient a script call needs.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

var (
	evalshaArg any = "evalsha"
	evalArg    any = "eval"
)

// Positions in a script call's argument list.
const (
	argCmd     = 0
	argScript  = 1
	argNumKeys = 2
	argKeys    = 3
)

// runSlice runs the script and returns its array reply. args must start with
// argKeys placeholders, then the key count, keys and ARGV. args is only
// read during the call: the command has been written once the reply is
// read, so the caller may reuse it afterwards.
func (is *intScript) runSlice(ctx context.Context, c processor, args []any) ([]int64, error) {
	return run(ctx, is, c, args, redis.NewIntSliceCmd).Result()
}

// runInt runs the script and returns its integer reply; args as for
// runSlice.
func (is *intScript) runInt(ctx context.Context, c processor, args []any) (int64, error) {
	return run(ctx, is, c, args, redis.NewIntCmd).Result()
}

// run sends EVALSHA and, when the server lacks the script, EVAL with its
// source, as a command made by newCmd.
func run[C interface {
	redis.Cmder
	SetFirstKeyPos(int8)
}](ctx context.Context, is *intScript, c processor, args []any, newCmd func(context.Context, ...any) C) C {
	args[argCmd], args[argScript] = evalshaArg, is.hash
	cmd := newCmd(ctx, args...)
	cmd.SetFirstKeyPos(argKeys)
	if p, ok := c.(*pipeline); ok && is.batch != nil {
		_ = p.process(ctx, cmd, is.batch)
	} else {
		_ = c.Process(ctx, cmd)
	}
	if isNoScript(cmd.Err()) {
		args[argCmd], args[argScript] = evalArg, is.src
		cmd = newCmd(ctx, args...)
		cmd.SetFirstKeyPos(argKeys)
		_ = c.Process(ctx, cmd)
	}
	return cmd
}

// isNoScript reports the server not knowing a script yet (first call after
// a restart or SCRIPT FLUSH).
func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// scriptArgs is one script call's argument list and key-building buffer,
// pooled so a call allocates neither.
type scriptArgs struct {
	args [20]any
	buf  [128]byte
}

var scriptArgsPool = sync.Pool{New: func() any { return new(scriptArgs) }}

func getScriptArgs() *scriptArgs { return scriptArgsPool.Get().(*scriptArgs) }

func (sa *scriptArgs) release() {
	// Drop references so pooled buffers keep no tenant strings alive.
	clear(sa.args[:])
	scriptArgsPool.Put(sa)
}
