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
-- Reply: {code, current, limit, ceiling[, extra...]}; codes are Go's Outcome
-- values: 1 admitted, 2 over limit (+ plan name), 3 locked (+ plan name,
-- 0-based flag index), 4 unknown tenant, 7 anchor mismatch (+ real anchor).
local ent = KEYS[1]
if redis.call('EXISTS', ent) == 0 then
  return {4, 0, 0, 0}
end

for i = 7, #ARGV do
  if redis.call('HGET', ent, ARGV[i]) ~= '1' then
    return {3, 0, 0, 0, redis.call('HGET', ent, 'plan_name') or '', i - 7}
  end
end

local mode = tonumber(ARGV[4])
if mode == 3 then
  return {1, 0, 0, 0}
end

if mode >= 5 then
  local anchor = redis.call('HGET', ent, 'anchor') or '0'
  if tonumber(anchor) ~= tonumber(ARGV[1]) then
    return {7, 0, 0, 0, anchor}
  end
  mode = mode - 4
end

-- A feature missing from the hash was never granted: limit 0.
local limit = tonumber(redis.call('HGET', ent, ARGV[6]) or '0') or 0
local ceiling = -1
if limit < 0 then
  limit = -1
else
  ceiling = math.floor(limit * tonumber(ARGV[3]) + 1e-9)
end

local key = KEYS[2]
local used = tonumber(redis.call('GET', key) or '0') or 0

if mode == 4 then
  return {1, used, limit, ceiling}
end

if mode == 2 then
  if ceiling >= 0 and used >= ceiling then
    return {2, used, limit, ceiling, redis.call('HGET', ent, 'plan_name') or ''}
  end
  return {1, used, limit, ceiling}
end

local amount = tonumber(ARGV[2])
if ceiling >= 0 and used + amount > ceiling then
  return {2, used, limit, ceiling, redis.call('HGET', ent, 'plan_name') or ''}
end
if amount > 0 then
  used = redis.call('INCRBY', key, amount)
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end
return {1, used, limit, ceiling}
