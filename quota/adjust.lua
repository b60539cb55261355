-- Adds a signed delta to a counter; a decrement never takes it below zero.
--
-- KEYS[1] counter key
-- KEYS[2] optional delivery marker: when present and already set, the delta
--         was applied by an earlier attempt and nothing changes
-- ARGV[1] delta
-- ARGV[2] counter TTL in seconds applied on increments, 0 for none
-- ARGV[3] marker TTL in seconds
--
-- Reply: the counter's new value, or -1 when the marker said "done".
if KEYS[2] then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
    return -1
  end
end
local key = KEYS[1]
local d = tonumber(ARGV[1])
if d < 0 then
  local cur = tonumber(redis.call('GET', key) or '0') or 0
  if cur + d < 0 then
    d = -cur
  end
  if d == 0 then
    return cur
  end
end
local v = redis.call('INCRBY', key, d)
-- Every TTL sent for a counter ends at the same instant (its period's end
-- plus a week), so it is set once, by the increment that created the key.
if d > 0 and v == d then
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end
return v
