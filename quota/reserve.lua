-- The reserve decision: checks a tenant's flags and limit and reserves an
-- amount. This file defines the function only; reserve_one.lua and
-- reserve_batch.lua (each appended to it, see reserve.go) call it once per
-- script run or once per run of identical requests in a batch. Either way
-- one script run decides atomically.
--
-- keys[1] entitlement hash tg:{tid}:ent
-- keys[2] counter key (keys[1] again when only flags are checked)
-- argv[1] anchor the caller used to pick the metered period
-- argv[2] amount to reserve (>= 0)
-- argv[3] grace: the ceiling is floor(limit * grace + 1e-9)
-- argv[4] mode: 1 reserve, 2 response amount (admit while used < ceiling,
--         reserve nothing), 3 flags only, 4 gauge delete (reserve nothing),
--         5 metered reserve, 6 metered response amount (5 and 6 check the anchor)
-- argv[5] counter TTL in seconds, 0 for none
-- argv[6] limit field l:<feature>
-- argv[7..] required flag fields f:<flag>
--
-- The reply holds integers only, so the client reads it without boxing
-- every element: {code, current, limit, ceiling[, extra, name...]}. Codes
-- are Go's Outcome values: 1 admitted, 2 over limit (extra 0), 3 locked
-- (extra: 0-based flag index), 4 unknown tenant, 7 anchor mismatch (extra:
-- the real anchor), 8 a value in Redis that is not what Tollgate writes
-- (extra: 1 the anchor, 2 the counter, 3 the limit, 4 the entitlement,
-- which is no hash; reserve_batch.lua adds 0, see there). Over limit and
-- locked append the plan's display name as one integer per byte (its
-- first 255 bytes; string.byte's results expand in place at the end of a
-- table constructor).
--
-- Numbers read from Redis (anchor, limit, counter) must be integers within
-- +-2^53, where a double is exact: n % 1 == 0 rules out fractions, and NaN
-- and the infinities (whose % 1 is NaN), the bounds the rest, without a
-- function call on the admitted path. Anything else is malformed: "abc",
-- "5.5", "nan", "inf", "1e400". tonumber also reads a few texts Go never
-- writes but whose integer is unambiguous (" 5", "0x3", "1e3"); they are
-- accepted where only read, and INCRBY refuses them where written (the
-- counter is then malformed too).
--
-- reserve decides count identical requests at once, exactly as deciding
-- them one after another would: it returns the first's decision, then m
-- and step (the next m requests get the first's decision with its current
-- value step, 2 step, ... higher), then, when m < count - 1, the decision
-- of the rest. Only admitted reserves of a positive amount change the
-- counter, so every other decision is every request's (m = count - 1,
-- step 0), and admitted ones stop where the ceiling does.
--
-- Commands: one HMGET reads everything the decision needs from the
-- entitlement; a reserve then costs one INCRBY for all count requests
-- (plus a GET first when the limit is finite, so a refusal writes
-- nothing), and EXPIRE only when the INCRBY created the counter: every TTL
-- the proxy sends for a counter ends at the same instant, so setting it
-- once is enough. Redis's Lua allocates every table and runs every
-- instruction at a price that dominated the batch script (bench/README.md),
-- so the decision keeps both few: no caches, no helper tables.

-- incr adds amount to key's counter and returns the new value, or nil when
-- the counter holds something INCRBY refuses (pcall turns that into the
-- "malformed" reply instead of a script error).
local function incr(key, amount, ttl)
  local used = redis.pcall('INCRBY', key, amount)
  if type(used) ~= 'number' then
    return nil
  end
  if used == amount and ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  return used
end

local function reserve(keys, argv, count)
  local same = count - 1
  local ent = keys[1]
  -- Every read is a pcall: a key of another type answers "malformed"
  -- instead of raising, which would fail a batch's other runs too.
  local h = redis.pcall('HMGET', ent, 'plan', 'anchor', argv[6], 'plan_name', unpack(argv, 7))
  -- Every entitlement written by Tollgate has a plan; the error and EXISTS
  -- checks only run without one, to keep "any hash means a known tenant".
  if not h[1] then
    if h.err then
      return {8, 0, 0, 0, 4}, same, 0
    end
    if redis.call('EXISTS', ent) == 0 then
      return {4, 0, 0, 0}, same, 0
    end
  end

  for i = 5, #h do
    if h[i] ~= '1' then
      return {3, 0, 0, 0, i - 5, string.byte(h[4] or '', 1, 255)}, same, 0
    end
  end

  local mode = tonumber(argv[4])
  if mode == 3 then
    return {1, 0, 0, 0}, same, 0
  end

  if mode >= 5 then
    local anchor = h[2] or '0'
    -- Both sides are decimal integers written by Go: a string compare
    -- settles the common case; numbers decide when the texts differ.
    if anchor ~= argv[1] then
      local a = tonumber(anchor)
      if not (a and a % 1 == 0 and a >= -2^53 and a <= 2^53) then
        return {8, 0, 0, 0, 1}, same, 0
      end
      if a ~= tonumber(argv[1]) then
        return {7, 0, 0, 0, a}, same, 0
      end
    end
    mode = mode - 4
  end

  -- A feature missing from the hash was never granted: limit 0.
  local limit = tonumber(h[3] or '0')
  if not (limit and limit % 1 == 0 and limit >= -2^53 and limit <= 2^53) then
    return {8, 0, 0, 0, 3}, same, 0
  end
  local ceiling = -1
  if limit < 0 then
    limit = -1
  else
    ceiling = math.floor(limit * tonumber(argv[3]) + 1e-9)
  end

  local key = keys[2]
  local amount = 0
  if mode == 1 then
    amount = tonumber(argv[2])
  end

  if amount > 0 and ceiling < 0 then
    -- Unlimited: nothing to compare, only to count.
    local used = incr(key, count * amount, tonumber(argv[5]))
    if not used then
      return {8, 0, 0, 0, 2}, same, 0
    end
    return {1, used - same * amount, limit, ceiling}, same, amount
  end

  -- A key of another type: GET's error reply is a table, which tonumber
  -- turns into nil.
  local used = redis.pcall('GET', key)
  if used then
    used = tonumber(used)
    if not (used and used % 1 == 0 and used >= -2^53 and used <= 2^53) then
      return {8, 0, 0, 0, 2}, same, 0
    end
  else
    used = 0
  end

  if mode == 4 then
    return {1, used, limit, ceiling}, same, 0
  end

  if mode == 2 then
    if ceiling >= 0 and used >= ceiling then
      return {2, used, limit, ceiling, 0, string.byte(h[4] or '', 1, 255)}, same, 0
    end
    return {1, used, limit, ceiling}, same, 0
  end

  if amount <= 0 then
    if ceiling >= 0 and used + amount > ceiling then
      return {2, used, limit, ceiling, 0, string.byte(h[4] or '', 1, 255)}, same, 0
    end
    return {1, used, limit, ceiling}, same, 0
  end

  -- How many of the count fit: the first needs used + amount <= ceiling.
  local n = count
  if ceiling >= 0 then
    n = math.min(count, math.floor((ceiling - used) / amount))
  end
  if n < 1 then
    return {2, used, limit, ceiling, 0, string.byte(h[4] or '', 1, 255)}, same, 0
  end
  local total = incr(key, n * amount, tonumber(argv[5]))
  if not total then
    return {8, 0, 0, 0, 2}, same, 0
  end
  local first = {1, total - (n - 1) * amount, limit, ceiling}
  if n == count then
    return first, same, amount
  end
  return first, n - 1, amount, {2, total, limit, ceiling, 0, string.byte(h[4] or '', 1, 255)}
end
