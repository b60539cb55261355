-- Restores one tenant's counts into a wiped Redis, at most once.
--
-- KEYS[1]   the tenant's restore marker tg:{tid}:restored
-- KEYS[2..] the tenant's counters
-- ARGV[1]   the epoch (the marker's value)
-- ARGV[2..] per counter: amount, TTL in seconds (0: none)
--
-- INCRBY rather than SET keeps counts that landed since the wipe (usage
-- counted while Redis was down and pushed by quota's reconcile). The marker
-- lives in the tenant's slot, is set in the same script and never
-- expires, so a retried restore adds nothing twice. Reply: 1 restored,
-- 0 already restored, -k restored but for k counters that hold what
-- Tollgate never writes (another type, or no integer within +-2^53).
--
-- Every counter is checked before any is changed, and a bad one is left
-- out alone: an INCRBY failing midway would keep the earlier ones without
-- the marker, and the retry would add them again; leaving the tenant out
-- whole would let its good counters start from 0, and the next flush would
-- overwrite its billed usage with that.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local bad, skip = 0, {}
for i = 2, #KEYS do
  local v = redis.pcall('GET', KEYS[i])
  local ok = type(v) ~= 'table'
  if ok and v then
    local n = tonumber(v)
    local sum = n and n + tonumber(ARGV[2 * i - 2])
    ok = n and n % 1 == 0 and n >= -2^53 and sum >= -2^53 and sum <= 2^53
  end
  if not ok then
    bad = bad + 1
    skip[i] = true
  end
end
for i = 2, #KEYS do
  if not skip[i] then
    local amount = tonumber(ARGV[2 * i - 2])
    local ttl = tonumber(ARGV[2 * i - 1])
    if amount > 0 then
      redis.call('INCRBY', KEYS[i], amount)
    end
    if ttl > 0 and redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
if bad > 0 then
  return -bad
end
return 1
