-- Checks a tenant's flags and limit and reserves an amount, atomically.
--
-- KEYS[1] entitlement hash tg:{tid}:ent
-- KEYS[2] counter key (KEYS[1] again when only flags are checked)
-- ARGV[1] anchor the caller used to pick the metered period
-- ARGV[2] amount to reserve (>= 0)
-- ARGV[3] grace: the ceiling is floor(limit * grace + 1e-9)
-- ARGV[4] mode: 1 reserve, 2 response amount (admit while used < ceiling,
--         reserve nothing), 3 flags only, 4 gauge delete (reserve nothing),
--         5 metered reserve, 6 metered response amount (5 and 6 check the anchor)
-- ARGV[5] counter TTL in seconds, 0 for none
-- ARGV[6] limit field l:<feature>
-- ARGV[7..] required flag fields f:<flag>
--
-- The reply holds integers only, so the client reads it without boxing
-- every element: {code, current, limit, ceiling[, extra, name...]}. Codes
-- are Go's Outcome values: 1 admitted, 2 over limit (extra 0), 3 locked
-- (extra: 0-based flag index), 4 unknown tenant, 7 anchor mismatch (extra:
-- the real anchor). Over limit and locked append the plan's display name
-- as one integer per byte (its first 255 bytes; string.byte's results
-- expand in place at the end of a table constructor).
--
-- Commands: one HMGET reads everything the decision needs from the
-- entitlement; a reserve then costs one INCRBY (plus a GET first when the
-- limit is finite, so a refusal writes nothing), and EXPIRE only when the
-- INCRBY created the counter: every TTL the proxy sends for a counter ends
-- at the same instant, so setting it once is enough.
local ent = KEYS[1]
local h = redis.call('HMGET', ent, 'plan', 'anchor', ARGV[6], 'plan_name', unpack(ARGV, 7))
-- Every entitlement written by Tollgate has a plan; EXISTS only runs for a
-- hash without one, to keep "any hash means a known tenant".
if not h[1] and redis.call('EXISTS', ent) == 0 then
  return {4, 0, 0, 0}
end

for i = 5, #h do
  if h[i] ~= '1' then
    return {3, 0, 0, 0, i - 5, string.byte(h[4] or '', 1, 255)}
  end
end

local mode = tonumber(ARGV[4])
if mode == 3 then
  return {1, 0, 0, 0}
end

if mode >= 5 then
  local anchor = h[2] or '0'
  -- Both sides are decimal integers written by Go: a string compare
  -- settles the common case; numbers decide when the texts differ.
  if anchor ~= ARGV[1] then
    local a = tonumber(anchor)
    if a == nil or a ~= math.floor(a) then
      return redis.error_reply('ERR malformed anchor ' .. anchor)
    end
    if a ~= tonumber(ARGV[1]) then
      return {7, 0, 0, 0, a}
    end
  end
  mode = mode - 4
end

-- A feature missing from the hash was never granted: limit 0.
local limit = tonumber(h[3] or '0') or 0
local ceiling = -1
if limit < 0 then
  limit = -1
else
  ceiling = math.floor(limit * tonumber(ARGV[3]) + 1e-9)
end

local key = KEYS[2]
local amount = 0
if mode == 1 then
  amount = tonumber(ARGV[2])
end

if amount > 0 and ceiling < 0 then
  -- Unlimited: nothing to compare, so no GET.
  local used = redis.call('INCRBY', key, amount)
  if used == amount then
    local ttl = tonumber(ARGV[5])
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
  end
  return {1, used, limit, ceiling}
end

local used = tonumber(redis.call('GET', key) or '0') or 0

if mode == 4 then
  return {1, used, limit, ceiling}
end

if mode == 2 then
  if ceiling >= 0 and used >= ceiling then
    return {2, used, limit, ceiling, 0, string.byte(h[4] or '', 1, 255)}
  end
  return {1, used, limit, ceiling}
end

if ceiling >= 0 and used + amount > ceiling then
  return {2, used, limit, ceiling, 0, string.byte(h[4] or '', 1, 255)}
end
if amount > 0 then
  used = redis.call('INCRBY', key, amount)
  if used == amount then
    local ttl = tonumber(ARGV[5])
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
  end
end
return {1, used, limit, ceiling}
