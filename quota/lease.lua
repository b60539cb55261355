-- Settles one instance's lease of a metered feature and grants it a new
-- chunk, atomically. Never grants past the ceiling: committed usage plus all
-- live leases stays <= ceiling.
--
-- KEYS[1] entitlement hash tg:{tid}:ent
-- KEYS[2] counter key tg:{tid}:m:<feature>:<period start> (committed usage)
-- KEYS[3] lease hash tg:{tid}:lease:<feature>:<period start>
-- ARGV[1] anchor the caller used to pick the period
-- ARGV[2] grace: the ceiling is floor(limit * grace + 1e-9)
-- ARGV[3] counter TTL in seconds
-- ARGV[4] limit field l:<feature>
-- ARGV[5] this lease's field (instance id and lease state)
-- ARGV[6] call sequence number; a call whose number is already recorded was
--         applied before (its reply got lost) and only gets its grant again
-- ARGV[7] consumed units to add to the counter (signed: releases after a
--         report make it negative)
-- ARGV[8] unused units the instance gives back
-- ARGV[9] wanted chunk (0: give back only)
-- ARGV[10] units this call's own request needs at least
-- ARGV[11] lease TTL in milliseconds
-- ARGV[12..] flag fields f:<flag> whose state the caller caches
--
-- A lease field's value is "units:expiresAtMs:seq:lastGrant"; units are what
-- the instance holds (unused plus consumed but not yet reported). Expired
-- fields count for nothing: their units are back in the pool. They are kept
-- a while longer so a late retry still finds its sequence number.
--
-- Reply: {code, used, limit, ceiling, grant, others, plan name, flags}
-- code 1 ok (grant may be 0), 4 unknown tenant, 7 anchor mismatch (+ anchor
-- in place of the plan name), 8 a value in Redis that Tollgate does not
-- write (+ what, as in reserve.lua, in place of the plan name: 2 the
-- counter, 3 the limit, 4 the entitlement, which is no hash, 5 the lease
-- hash, which is no hash). others is the sum of the other live leases;
-- flags has one '1'/'0' per ARGV[12..].
--
-- Everything is read and checked before anything is written, with pcall
-- where a key of another type would raise: a call answered 8 has changed
-- nothing, so its retry (the same sequence number) applies it once the
-- value is repaired. (An error after the counter's INCRBY would leave the
-- report applied without its sequence number, and the retry would apply
-- it again.) Numbers read must be integers within +-2^53, as in
-- reserve.lua.
local ent, key, lk = KEYS[1], KEYS[2], KEYS[3]
local id, seq = ARGV[5], ARGV[6]
local lttl = tonumber(ARGV[11])
local keep = 60000 -- ms an expired field stays readable for retries
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function malformed(what)
  return {8, 0, 0, 0, 0, 0, what, ''}
end

-- int is v as an integer within +-2^53, or nil (v may be an error table).
local function int(v)
  local n = tonumber(v)
  if n and n % 1 == 0 and n >= -2^53 and n <= 2^53 then
    return n
  end
  return nil
end

local function parse(v)
  local u, e, s, g = string.match(v, '^(%-?%d+):(%d+):(%d+):(%-?%d+)$')
  if not u then
    return 0, 0, '', 0
  end
  return tonumber(u), tonumber(e), s, tonumber(g)
end

local own = redis.pcall('HGET', lk, id)
if type(own) == 'table' then
  return malformed(5)
end
local used = redis.pcall('GET', key)
if used then
  used = int(used)
  if not used then
    return malformed(2)
  end
else
  used = 0
end
-- The entitlement: anchor, limit, plan name, then the flags.
local known = redis.call('EXISTS', ent) == 1
local h, limit
if known then
  h = redis.pcall('HMGET', ent, 'anchor', ARGV[4], 'plan_name', unpack(ARGV, 12))
  if h.err then
    return malformed(4)
  end
  -- A feature missing from the hash was never granted: limit 0.
  limit = int(h[2] or '0')
  if not limit then
    return malformed(3)
  end
end

local units, alive, dup, lastg = 0, false, false, 0
if own then
  local u, e, s, g = parse(own)
  if e > now then
    units, alive = u, true
  end
  if s == seq then
    dup = true
    -- An expired grant is back in the pool: it cannot be handed out again.
    if alive then
      lastg = g
    end
  end
end

-- The report is applied before the tenant and anchor checks below: a lease
-- retired because its period was wrong (answered 7) still reports what it
-- handed out, to the counter its requests were admitted on.
if not dup then
  local consumed = tonumber(ARGV[7])
  if consumed < 0 and used + consumed < 0 then
    consumed = -used
  end
  if consumed ~= 0 then
    -- The first write: a counter tonumber reads but INCRBY refuses
    -- (" 5") still leaves everything unchanged.
    local v = redis.pcall('INCRBY', key, consumed)
    if type(v) ~= 'number' then
      return malformed(2)
    end
    used = v
    local ttl = tonumber(ARGV[3])
    if consumed > 0 and ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
  end
  if alive then
    -- What the instance still holds besides what it reports and returns
    -- (units taken while this call was on its way) stays leased.
    units = units - tonumber(ARGV[7]) - tonumber(ARGV[8])
  end
end

local function save(grant)
  if dup then
    grant = lastg
  else
    units = units + grant
  end
  redis.call('HSET', lk, id, units .. ':' .. (now + lttl) .. ':' .. seq .. ':' .. grant)
  if redis.call('PTTL', lk) < lttl + keep then
    redis.call('PEXPIRE', lk, lttl + keep)
  end
  return grant
end

if not known then
  save(0)
  return {4, 0, 0, 0, 0, 0, '', ''}
end

local anchor = h[1] or '0'
if tonumber(anchor) ~= tonumber(ARGV[1]) then
  save(0)
  return {7, 0, 0, 0, 0, 0, anchor, ''}
end

local flags = {}
for i = 4, #h do
  flags[#flags + 1] = (h[i] == '1') and '1' or '0'
end
flags = table.concat(flags)
local plan = h[3] or ''

local ceiling = -1
if limit < 0 then
  limit = -1
else
  ceiling = math.floor(limit * tonumber(ARGV[2]) + 1e-9)
end

-- Sum the other live leases; forget fields expired long ago.
local others, live = 0, 1
local all = redis.call('HGETALL', lk)
for i = 1, #all, 2 do
  if all[i] ~= id then
    local u, e = parse(all[i + 1])
    if e > now then
      others = others + u
      if u > 0 then
        live = live + 1
      end
    elseif e + keep <= now then
      redis.call('HDEL', lk, all[i])
    end
  end
end

local grant = 0
local want = tonumber(ARGV[9])
if want > 0 then
  local need = tonumber(ARGV[10])
  if ceiling < 0 then
    grant = math.max(want, need)
  else
    local avail = ceiling - used - others - units
    if avail > 0 then
      grant = math.min(want, math.floor(avail / (2 * live)))
      grant = math.min(math.max(grant, need, 1), avail)
    end
  end
end
grant = save(grant)
return {1, used, limit, ceiling, grant, others, plan, flags}
