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
--
-- The marker is set only once the delta is applied (the script is atomic,
-- so nothing runs between the check and the set): an INCRBY that fails
-- (a counter that is no integer, a key of another type, an overflow)
-- fails the script with nothing written, and the retry applies the delta.
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local key = KEYS[1]
local d = tonumber(ARGV[1])
local v
if d < 0 then
  -- A decrement needs the counter's value; one that is no integer (checked
  -- as in reserve.lua) fails, like INCRBY on it, instead of reading as 0.
  local cur = tonumber(redis.call('GET', key) or '0')
  if not (cur and cur % 1 == 0 and cur >= -2^53 and cur <= 2^53) then
    return redis.error_reply('ERR malformed counter ' .. key .. ': not an integer')
  end
  if cur + d < 0 then
    d = -cur
  end
  if d == 0 then
    v = cur
  end
end
if not v then
  v = redis.call('INCRBY', key, d)
  -- Every TTL sent for a counter ends at the same instant (its period's
  -- end plus a week), so it is set once, by the increment that created it.
  if d > 0 and v == d then
    local ttl = tonumber(ARGV[2])
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    end
  end
end
if KEYS[2] then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
end
return v
