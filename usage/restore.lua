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
-- 0 already restored, -1 nothing restored because a counter holds what
-- Tollgate never writes (another type, or no integer within +-2^53).
--
-- Every counter is checked before any is changed: an INCRBY failing after
-- others had run would keep theirs without the marker, and the retry would
-- add them again.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 2, #KEYS do
  local v = redis.pcall('GET', KEYS[i])
  if type(v) == 'table' then
    return -1
  end
  if v then
    local n = tonumber(v)
    local sum = n and n + tonumber(ARGV[2 * i - 2])
    if not (n and n % 1 == 0 and sum >= -2^53 and sum <= 2^53 and n >= -2^53) then
      return -1
    end
  end
end
for i = 2, #KEYS do
  local amount = tonumber(ARGV[2 * i - 2])
  local ttl = tonumber(ARGV[2 * i - 1])
  if amount > 0 then
    redis.call('INCRBY', KEYS[i], amount)
  end
  if ttl > 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
