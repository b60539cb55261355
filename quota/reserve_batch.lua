-- Many requests' reserves in one script run (appended to reserve.lua): the
-- pipeline folds the reserves that leave in one write into this call
-- (pipeline.go). Each request is decided in order exactly as reserve_one
-- would decide it, so a limit holds the same way; what the batch saves is
-- a command per request and the repeated reads: an entitlement field is
-- read once per batch, a counter is read once and written once (one INCRBY
-- of the batch's total), however many requests touched it.
--
-- Requests with identical arguments (the common case: one tenant's calls
-- to one route) come as one run, sent once with their count, and are
-- decided together: the first as usual; when it was admitted and counted,
-- the next ones are admitted while they fit, each one amount more, which
-- is what deciding them one by one gives; any other decision changes
-- nothing, so it is every one's.
--
-- KEYS: every run's keys, in order.
-- ARGV: per run, its key count, its argument count, its request count,
--       then its arguments.
-- Reply, per run of k requests: the length of the first's decision and
-- the decision; when k > 1, then m and step: the next m requests get the
-- first's decision with its current value (field 2) step, 2 step, ...
-- higher; when m < k - 1, then the length and decision of the rest.
local fields = {} -- ent -> field -> value (false: absent)
local reads = {}  -- ent -> limit field -> what hmget returned, for calls without flags
local known = {}  -- ent -> EXISTS
local counts = {} -- counter key -> value, this batch's increments included
local added = {}  -- counter key -> this batch's increment
local ttls = {}   -- counter key -> TTL to set if the batch creates it
local order = {}  -- counter keys in the order first incremented

local db = {}

function db.hmget(ent, limit, ...)
  local flagless = select('#', ...) == 1 -- only 'plan_name'
  local r = reads[ent]
  if flagless and r and r[limit] then
    return r[limit]
  end
  local f = fields[ent]
  if not f then
    f = {}
    fields[ent] = f
  end
  local want = {'plan', 'anchor', limit, ...}
  local missing = {}
  for i = 1, #want do
    if f[want[i]] == nil then
      missing[#missing + 1] = want[i]
    end
  end
  if #missing > 0 then
    local got = redis.call('HMGET', ent, unpack(missing))
    for i = 1, #missing do
      f[missing[i]] = got[i]
    end
  end
  local h = {}
  for i = 1, #want do
    h[i] = f[want[i]]
  end
  if flagless then
    if not r then
      r = {}
      reads[ent] = r
    end
    r[limit] = h
  end
  return h
end

function db.exists(ent)
  local e = known[ent]
  if e == nil then
    e = redis.call('EXISTS', ent)
    known[ent] = e
  end
  return e
end

function db.used(key)
  local v = counts[key]
  if v == nil then
    local s = redis.call('GET', key)
    if s then
      -- The batch's one INCRBY must not fail after others were written:
      -- a value INCRBY would refuse is refused here, for this key only.
      v = tonumber(s)
      if v == nil or v ~= math.floor(v) then
        v = false
      end
    else
      v = 0
    end
    counts[key] = v
  end
  return v or nil
end

function db.incr(key, amount, ttl)
  local v = db.used(key)
  if not v then
    return nil
  end
  if not added[key] then
    added[key] = 0
    order[#order + 1] = key
  end
  v = v + amount
  counts[key] = v
  added[key] = added[key] + amount
  ttls[key] = ttl
  return v
end

local out, n = {}, 0
local function emit(r)
  out[n + 1] = #r
  for i = 1, #r do
    out[n + 1 + i] = r[i]
  end
  n = n + 1 + #r
end

local k, a = 1, 1
while a <= #ARGV do
  local nk, na, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys, argv = {unpack(KEYS, k, k + nk - 1)}, {unpack(ARGV, a + 3, a + 2 + na)}
  k, a = k + nk, a + 3 + na
  local r = reserve(keys, argv, db)
  emit(r)
  if count > 1 then
    local rest, m, step = count - 1, count - 1, 0
    local mode, amount = tonumber(argv[4]), tonumber(argv[2])
    if r[1] == 1 and (mode == 1 or mode == 5) and amount > 0 then
      step = amount
      local used, ceiling = r[2], r[4]
      if ceiling >= 0 then
        m = math.min(rest, math.floor((ceiling - used) / amount))
      end
      if m > 0 then
        db.incr(keys[2], m * amount, tonumber(argv[5]))
      end
    end
    out[n + 1], out[n + 2] = m, step
    n = n + 2
    if m < rest then
      -- The counter is now where the first refusal finds it.
      emit(reserve(keys, argv, db))
    end
  end
end

for _, key in ipairs(order) do
  local total = added[key]
  if total > 0 then
    local used = redis.call('INCRBY', key, total)
    if used == total and ttls[key] > 0 then
      redis.call('EXPIRE', key, ttls[key])
    end
  end
end
return out
