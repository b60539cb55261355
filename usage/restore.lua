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
-- 0 already restored.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
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
